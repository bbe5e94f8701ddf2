package dstest

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/daemon"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/lab"
)

// TestDatastoreMemberLoss: `calicoctl datastore start --name --initial-cluster`
// forms a real three-member etcd cluster, one member per host namespace.
// Killing the leader's process (SIGKILL) changes nothing for users: with
// ETCD_ENDPOINTS listing all three, calicoctl writes keep working from every
// host (including the one that lost its member) and the agents keep
// programming what is written (a workload added during the loss is reached
// from the other hosts). The member then restarts on its data directory,
// rejoins, and serves the keys written while it was away from its own store.
func TestDatastoreMemberLoss(t *testing.T) {
	w := newWorld(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w.startEtcd(w.hosts...)
	cli := w.client(w.hosts[0])
	members, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range members.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"n1", "n2", "n3"}) {
		t.Fatalf("cluster members %v, want n1 n2 n3", names)
	}

	for _, h := range w.hosts {
		w.startNode(h)
	}
	h1 := w.hosts[0]
	w.ok(h1, "pool", "add", "192.168.50.0/24")
	w.ok(h1, "profile", "add", "P")
	workloads := map[*lab.Host]*lab.Netns{}
	for _, h := range w.hosts {
		name := "w-" + h.Label
		ns, _ := w.addWorkload(h, name, "auto")
		w.ok(h, "container", name, "profile", "append", "P")
		workloads[h] = ns
	}

	// Kill the leader: the harder case, since the cluster must elect anew.
	victim, idx := leader(t, ctx, cli, w)
	vname := fmt.Sprintf("n%d", idx+1)
	pidFile := filepath.Join(w.etcdDir(vname), "etcd.pid")
	pid, alive := daemon.Running(pidFile)
	if !alive {
		t.Fatalf("member %s is not running (pid file %s)", vname, pidFile)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "killed member to exit", func() (bool, string) {
		_, alive := daemon.Running(pidFile)
		return !alive, fmt.Sprintf("pid %d alive", pid)
	})
	t.Logf("killed member %s (the leader) on %s, pid %d", vname, victim.Label, pid)

	// Users go on, from the host that lost its member first.
	var lat []time.Duration
	timed := func(h *lab.Host, args ...string) string {
		t.Helper()
		r := w.ctl(h, args...)
		if r.code != 0 {
			t.Fatalf("with member %s down: %s", vname, r)
		}
		lat = append(lat, r.elapsed)
		return r.stdout
	}
	timed(victim, "pool", "add", "192.168.51.0/24")
	timed(victim, "profile", "add", "Q")
	newNS, err := w.lab.AddWorkloadNetns(victim, "wnew")
	if err != nil {
		t.Fatal(err)
	}
	out := timed(victim, "container", "add", "wnew", "192.168.51.7", "--netns", newNS.Path)
	if !strings.Contains(out, "192.168.51.7") {
		t.Fatalf("container add printed %q", out)
	}
	timed(victim, "container", "wnew", "profile", "append", "P")
	for _, h := range w.hosts {
		if h != victim {
			timed(h, "pool", "show")
		}
	}
	newIP := netip.MustParseAddr("192.168.51.7")

	// Agents go on: every other host's agent learned the new workload (its
	// route over BGP, its membership of P from the datastore).
	for _, h := range w.hosts {
		if h == victim {
			continue
		}
		if !ping(workloads[h], newIP) {
			t.Errorf("%s's workload cannot reach the workload added while member %s was down; %s routes:\n%s", h.Label, vname, h.Label, routes(t, h))
		}
	}
	for _, h := range w.hosts {
		if _, alive := daemon.Running(filepath.Join(w.dir, "run", "calico", h.Label, "calico-node.pid")); !alive {
			t.Errorf("calico-node on %s died while member %s was down", h.Label, vname)
		}
	}

	// Rejoin: the same command on the same data directory.
	restart := time.Now()
	r := calicoctl(t, victim.Netns, nil, "", w.etcdArgs(idx+1, victim, "")...)
	if r.code != 0 {
		t.Fatalf("restarting member %s: %s", vname, r)
	}
	own := w.client(victim, w.etcd[idx])
	keys := []string{datastore.PoolKey("192.168.51.0/24"), datastore.ProfileKey("Q"), datastore.EndpointKey(victim.Label, "wnew")}
	waitFor(t, 60*time.Second, "the restarted member to serve the keys written while it was down", func() (bool, string) {
		var missing []string
		for _, k := range keys {
			// Serializable: answered from the member's own store, not
			// forwarded to the leader; so it proves the member caught up.
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := own.Get(rctx, k, clientv3.WithSerializable())
			rcancel()
			if err != nil || len(resp.Kvs) == 0 {
				missing = append(missing, fmt.Sprintf("%s (%v)", k, err))
			}
		}
		return len(missing) == 0, strings.Join(missing, "\n")
	})
	rejoinTotal := time.Since(restart)
	st, err := own.Status(ctx, w.etcd[idx])
	if err != nil {
		t.Fatalf("status of the rejoined member: %v", err)
	}
	if st.Leader == 0 {
		t.Error("the rejoined member knows no leader")
	}
	members, err = cli.MemberList(ctx)
	if err != nil || len(members.Members) != 3 {
		t.Fatalf("member list after rejoin: %v, %v", members, err)
	}

	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	t.Logf("FIGURE: etcd member loss (leader %s SIGKILLed): %d calicoctl writes/reads all succeeded; latency median %s, max %s, mean %s",
		vname, len(lat), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), (sum / time.Duration(len(lat))).Round(time.Millisecond))
	t.Logf("FIGURE: etcd member rejoin: `datastore start` returned in %s; own store served the %d new keys %s after restart began",
		r.elapsed.Round(time.Millisecond), len(keys), rejoinTotal.Round(time.Millisecond))
}

// leader returns the host whose member leads, and its index.
func leader(t *testing.T, ctx context.Context, cli *clientv3.Client, w *world) (*lab.Host, int) {
	t.Helper()
	for i, ep := range w.etcd {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			t.Fatalf("status of %s: %v", ep, err)
		}
		if st.Leader == st.Header.MemberId {
			return w.hosts[i], i
		}
	}
	t.Fatal("no member says it leads")
	return nil, 0
}
