package security

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/ipam"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestDatastoreHygiene: the seed's world, then, in turn:
//
//   - a stale or forged endpoint record that lists another workload's
//     address: `container worker-1 ip remove` of it must not free it (before:
//     the address was released and could be handed out again);
//   - `ipam release` of an address a live workload holds must refuse
//     (before: freed, to be handed out twice); a leaked one is still freed;
//   - an endpoint record whose netns is the host's own namespace:
//     `container NAME ip add|remove` must refuse (before: `ip add` put the
//     address on the host's own uplink, with IPAM holding it);
//   - a pid file naming a process that is not the node's agent (the agent
//     died and its pid went to another process, a harmless sleep or another
//     host's calico-node): `node stop` must leave it alone (before: it was
//     killed);
//   - a stopped node whose Docker drivers still hold addresses and records:
//     `node remove` refuses, `node remove --force` frees them (before: the
//     addresses stayed assigned to the drivers' handle, and the records
//     stayed, for ever);
//
// while honest traffic (worker-1 to worker-3 across hosts), honest `ip
// add|remove`, honest `node stop` and restart still work.
func TestDatastoreHygiene(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	cli := e2etest.EtcdFrom(t, h2, w.Etcd)
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	honest := func(when string) {
		t.Helper()
		e2etest.WaitFor(t, 30*time.Second, "worker-1 reaches worker-3 "+when, func() (bool, string) {
			n := e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, 2)
			return n > 0, fmt.Sprintf("%d replies", n)
		})
	}
	honest("at the start")
	info := func(ip string) ipam.IPInfo {
		t.Helper()
		var in ipam.IPInfo
		out := ctl(t, ctx, w, h1, "ipam", "info", ip, "-o", "json")
		if err := json.Unmarshal([]byte(out), &in); err != nil {
			t.Fatalf("ipam info %s: %v: %s", ip, err, out)
		}
		return in
	}

	t.Run("ip remove of an address another workload holds", func(t *testing.T) {
		// Honest first: an address added and removed is taken and freed.
		ctl(t, ctx, w, h1, "container", "worker-1", "ip", "add", "192.168.100.50")
		if in := info("192.168.100.50"); !in.Assigned || in.Handle != "host1~worker-1" {
			t.Fatalf("after ip add: %+v", in)
		}
		ctl(t, ctx, w, h1, "container", "worker-1", "ip", "remove", "192.168.100.50")
		if in := info("192.168.100.50"); in.Assigned {
			t.Errorf("honest ip remove did not free the address: %+v", in)
		}
		// The attack: worker-1's record also lists worker-2's address.
		editEndpoint(t, ctx, cli, "host1", "worker-1", func(ep *api.Endpoint) {
			ep.IPv4Nets = append(ep.IPv4Nets, "192.168.100.2/32")
		})
		out, err := w.Ctl(ctx, h1, "container", "worker-1", "ip", "remove", "192.168.100.2")
		in := info("192.168.100.2")
		t.Logf("FIGURE: ip remove of worker-2's address through worker-1's forged record: failed=%v; worker-2's address assigned=%v to %s: %s", err != nil, in.Assigned, in.Handle, lastLine(out))
		if !in.Assigned || in.Handle != "host1~worker-2" {
			t.Errorf("worker-2's address was freed through another workload's record: %+v", in)
		}
		if err == nil || !strings.Contains(out, "stays assigned") {
			t.Errorf("want an error saying the address stays with its holder, got %v: %s", err, out)
		}
	})

	t.Run("ipam release of a live workload's address", func(t *testing.T) {
		out, err := w.Ctl(ctx, h1, "ipam", "release", "192.168.100.1")
		in := info("192.168.100.1")
		t.Logf("FIGURE: ipam release of worker-1's address: failed=%v, still assigned=%v: %s", err != nil, in.Assigned, lastLine(out))
		if err == nil || !in.Assigned || in.Handle != "host1~worker-1" {
			t.Errorf("a live workload's address was released (%v): %+v: %s", err, in, out)
		}
		// Honest: a leaked address (its holder has no endpoint) is freed.
		if err := ipam.New(datastore.Adopt(cli)).Assign(ctx, netip.MustParseAddr("192.168.100.90"), "host1~gone", "host1"); err != nil {
			t.Fatal(err)
		}
		ctl(t, ctx, w, h1, "ipam", "release", "192.168.100.90")
		if in := info("192.168.100.90"); in.Assigned {
			t.Errorf("the leaked address was not released: %+v", in)
		}
	})

	t.Run("ip add|remove in the host's own namespace", func(t *testing.T) {
		before, _ := h1.Run(ctx, "ip", "-o", "addr", "show", "dev", h1.Iface)
		editEndpoint(t, ctx, cli, "host1", "worker-2", func(ep *api.Endpoint) {
			ep.NetnsPath = h1.Path // the host's own namespace
			ep.WorkloadIface = h1.Iface
		})
		out, err := w.Ctl(ctx, h1, "container", "worker-2", "ip", "add", "192.168.100.60")
		after, _ := h1.Run(ctx, "ip", "-o", "addr", "show", "dev", h1.Iface)
		in := info("192.168.100.60")
		t.Logf("FIGURE: ip add through a record naming the host's namespace: failed=%v, host uplink has the address=%v, IPAM assigned=%v: %s",
			err != nil, strings.Contains(after, "192.168.100.60"), in.Assigned, lastLine(out))
		if err == nil || !strings.Contains(out, "is the host's own namespace") {
			t.Errorf("ip add in the host's namespace: want a refusal, got %v: %s", err, out)
		}
		if strings.Contains(after, "192.168.100.60") || after != before {
			t.Errorf("the host's uplink changed:\nbefore %s\nafter %s", before, after)
		}
		if in.Assigned {
			t.Errorf("the refused address stays assigned: %+v", in)
		}
		out, err = w.Ctl(ctx, h1, "container", "worker-2", "ip", "remove", "192.168.100.2")
		if err == nil || !strings.Contains(out, "is the host's own namespace") {
			t.Errorf("ip remove in the host's namespace: want a refusal, got %v: %s", err, out)
		}
		if in := info("192.168.100.2"); !in.Assigned {
			t.Errorf("worker-2's address was freed by a refused remove: %+v", in)
		}
	})
	honest("after the record attacks")

	t.Run("node stop with a reused pid", func(t *testing.T) {
		pidFile := filepath.Join(w.StateDir, "run", "calico", "host2", "calico-node.pid")
		agent := readPID(t, pidFile)
		record, err := os.ReadFile(pidFile + ".id")
		if err != nil {
			t.Fatalf("the agent's identity record: %v", err)
		}
		agent1 := readPID(t, filepath.Join(w.StateDir, "run", "calico", "host1", "calico-node.pid"))
		// host2's agent dies; its pid goes to another process.
		if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitGone(t, agent)
		sleeper := exec.Command("sleep", "300")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sleeper.Process.Kill()
			sleeper.Wait()
		})
		for _, victim := range []struct {
			what string
			pid  int
		}{{"a harmless sleep", sleeper.Process.Pid}, {"host1's calico-node", agent1}} {
			// As the files would read had the kernel given the agent's
			// number to victim: the pid, and the agent's identity record
			// (its start time and program) under that number.
			if err := os.WriteFile(pidFile, []byte(strconv.Itoa(victim.pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			rec := strings.Replace(string(record), fmt.Sprintf(`"pid":%d,`, agent), fmt.Sprintf(`"pid":%d,`, victim.pid), 1)
			if err := os.WriteFile(pidFile+".id", []byte(rec), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := w.Ctl(ctx, h2, "node", "stop")
			alive := syscall.Kill(victim.pid, 0) == nil
			t.Logf("FIGURE: node stop with host2's pid file naming %s: failed=%v, %s alive=%v: %s", victim.what, err != nil, victim.what, alive, lastLine(out))
			if !alive {
				t.Fatalf("node stop killed %s (pid %d)", victim.what, victim.pid)
			}
			if err == nil || !strings.Contains(out, "now belongs to another process") {
				t.Errorf("node stop: want an error saying the pid is another process's, got %v: %s", err, out)
			}
		}
		// The node starts again (the stale pid file does not block it) and
		// an honest stop still stops it.
		ctl(t, ctx, w, h2, "node", "--ip="+h2.Addr().String(), "--name=host2")
		honest("after host2's agent restarted")
		ctl(t, ctx, w, h2, "node", "stop")
		if pid := readPID(t, filepath.Join(w.StateDir, "run", "calico", "host1", "calico-node.pid")); syscall.Kill(pid, 0) != nil {
			t.Errorf("host1's agent died")
		}
	})

	t.Run("node remove --force frees the Docker drivers' addresses and records", func(t *testing.T) {
		// host2's node is stopped. Give it what its Docker drivers would
		// have left: addresses under their handle and their records.
		m := ipam.New(datastore.Adopt(cli))
		handle := api.LibnetworkHandle("host2")
		lnAddrs := []string{"192.168.100.70", "192.168.100.71"}
		for _, a := range lnAddrs {
			if err := m.Assign(ctx, netip.MustParseAddr(a), handle, "host2"); err != nil {
				t.Fatal(err)
			}
		}
		records := []string{datastore.PrefixLibnetwork + "network/host2/n1", datastore.PrefixLibnetwork + "endpoint/host2/e1"}
		for _, k := range records {
			if _, err := cli.Put(ctx, k, `{"id":"x"}`); err != nil {
				t.Fatal(err)
			}
		}
		// A record of another node that must stay.
		keep := datastore.PrefixLibnetwork + "network/host1/n1"
		if _, err := cli.Put(ctx, keep, `{"id":"x"}`); err != nil {
			t.Fatal(err)
		}
		ctl(t, ctx, w, h2, "container", "remove", "worker-3")
		out, err := w.Ctl(ctx, h1, "node", "remove", "--name=host2")
		if err == nil || !strings.Contains(out, "Docker networks") {
			t.Errorf("node remove without --force: want a refusal naming the Docker networks' addresses, got %v: %s", err, out)
		}
		ctl(t, ctx, w, h1, "node", "remove", "--name=host2", "--force")
		for _, a := range lnAddrs {
			in := info(a)
			t.Logf("FIGURE: after node remove --force, %s (held by host2's Docker drivers) assigned=%v", a, in.Assigned)
			if in.Assigned {
				t.Errorf("%s is still assigned after node remove --force: %+v", a, in)
			}
		}
		for _, k := range append(records, datastore.HandleKey(handle)) {
			if r, err := cli.Get(ctx, k); err != nil || len(r.Kvs) != 0 {
				t.Errorf("%s stays after node remove --force (%v)", k, err)
			}
		}
		if r, err := cli.Get(ctx, keep); err != nil || len(r.Kvs) != 1 {
			t.Errorf("host1's record %s was removed with host2 (%v)", keep, err)
		}
		cli.Delete(ctx, keep)
		if out := ctl(t, ctx, w, h1, "ipam", "show"); strings.Contains(out, "host2") {
			t.Errorf("host2 still owns blocks:\n%s", out)
		}
		if out, err := w.Ctl(ctx, h1, "ipam", "check"); err != nil || strings.Contains(out, "leaked") {
			t.Errorf("ipam check after node remove --force: %v\n%s", err, out)
		}
	})
}

// editEndpoint rewrites an endpoint record as a stray writer could.
func editEndpoint(t *testing.T, ctx context.Context, cli *clientv3.Client, node, workload string, fn func(*api.Endpoint)) {
	t.Helper()
	key := datastore.EndpointKey(node, workload)
	r, err := cli.Get(ctx, key)
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("endpoint %s: %v", key, err)
	}
	var ep api.Endpoint
	if err := json.Unmarshal(r.Kvs[0].Value, &ep); err != nil {
		t.Fatal(err)
	}
	fn(&ep)
	b, _ := json.Marshal(ep)
	if _, err := cli.Put(ctx, key, string(b)); err != nil {
		t.Fatal(err)
	}
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %q", file, b)
	}
	return pid
}

// waitGone waits until pid has exited and been reaped.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pid %d still alive", pid)
}
