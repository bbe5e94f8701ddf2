package dstest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
)

// localStore is a datastore started with `calicoctl datastore start` on
// 127.0.0.1, stopped when the test ends.
type localStore struct {
	addr string // host:port
	dir  string
}

func startLocalStore(t *testing.T, extraArgs []string, env map[string]string) localStore {
	t.Helper()
	dir := filepath.Join(newStateDir(t), "etcd")
	var r result
	for attempt := 0; attempt < 3; attempt++ {
		port, peer := freePort(t), freePort(t)
		if port == peer {
			continue
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		args := append([]string{"datastore", "start", "--listen", addr,
			"--peer-listen", "127.0.0.1:" + strconv.Itoa(peer), "--data-dir", dir, "--timeout", "30s"}, extraArgs...)
		r = calicoctl(t, nil, env, "", args...)
		if r.code == 0 {
			return localStore{addr: addr, dir: dir}
		}
		// Someone may have taken a port between our check and etcd's bind.
		t.Logf("datastore start failed, retrying: %s", r)
	}
	t.Fatalf("cannot start a datastore: %s", r)
	return localStore{}
}

// TestIPAMContention: 1000 automatic assignments spread over 5 hosts by 20
// clients at once, each with its own datastore connection (as 20 calicoctl
// processes would have), in a pool too small for every host to get blocks
// of its own, so hosts also borrow from each other's blocks. No address may
// be handed out twice and `calicoctl ipam check` must find nothing wrong;
// releasing everything, concurrently too, must leave no block, claim or
// handle behind.
func TestIPAMContention(t *testing.T) {
	const (
		clients = 20
		hosts   = 5
		total   = 1000
		pool    = "10.77.0.0/22" // 1022 usable addresses in 16 blocks of 64
	)
	st := startLocalStore(t, nil, nil)
	env := map[string]string{"ETCD_AUTHORITY": st.addr}
	if r := calicoctl(t, nil, env, "", "pool", "add", pool); r.code != 0 {
		t.Fatal(r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := datastore.Config{Endpoints: []string{"http://" + st.addr}}
	conns := make([]*client.Client, clients)
	for i := range conns {
		ds, err := datastore.Connect(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = client.New(ds)
		t.Cleanup(conns[i].Close)
	}

	type assigned struct {
		node, name string
		ip         netip.Addr
	}
	var (
		mu   sync.Mutex
		got  []assigned
		lats []time.Duration
		next atomic.Int64
		wg   sync.WaitGroup
	)
	errs := make(chan error, clients)
	start := time.Now()
	for g := range clients {
		c := conns[g]
		wg.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if n >= total {
					return
				}
				node := fmt.Sprintf("host%d", n%hosts+1)
				name := fmt.Sprintf("w%04d", n)
				t0 := time.Now()
				ip, err := c.IPAM.AutoAssign(ctx, node+"~"+name, node, 4, nil)
				if err == nil {
					// What `container add` records once the veth is wired.
					err = c.DS.Create(ctx, datastore.EndpointKey(node, name), api.Endpoint{
						Node: node, Workload: name, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, name),
						WorkloadIface: "eth0", IPv4Nets: []string{ip.String() + "/32"},
					})
				}
				if err != nil {
					errs <- fmt.Errorf("%s on %s: %w", name, node, err)
					return
				}
				mu.Lock()
				got = append(got, assigned{node, name, ip})
				lats = append(lats, time.Since(t0))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var conflicts uint64
	for _, c := range conns {
		conflicts += c.IPAM.Conflicts()
	}

	seen := map[netip.Addr]string{}
	dups := 0
	p := netip.MustParsePrefix(pool)
	for _, a := range got {
		if prev, dup := seen[a.ip]; dup {
			dups++
			t.Errorf("%s handed out twice: %s and %s", a.ip, prev, a.name)
		}
		seen[a.ip] = a.name
		if !p.Contains(a.ip) {
			t.Errorf("%s (%s) is outside the pool", a.ip, a.name)
		}
	}
	if len(got) != total {
		t.Fatalf("%d assignments, want %d", len(got), total)
	}
	check := calicoctl(t, nil, env, "", "ipam", "check")
	if check.code != 0 || !strings.Contains(check.stdout, "IPAM is consistent") {
		t.Errorf("ipam check after assigning:\n%s", check)
	}
	blocks, err := conns[0].IPAM.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	borrowed := 0
	for _, a := range got {
		for _, b := range blocks {
			if netip.MustParsePrefix(b.CIDR).Contains(a.ip) && b.Affinity != a.node {
				borrowed++
			}
		}
	}
	slices.Sort(lats)
	t.Logf("FIGURE: IPAM contention: %d auto assignments, %d hosts, %d clients in %s (%.0f/s): %d duplicates, %d lost races retried, %d blocks, %d addresses borrowed from another host's block; latency median %s, p99 %s, max %s",
		total, hosts, clients, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), dups, conflicts, len(blocks), borrowed,
		lats[len(lats)/2].Round(time.Millisecond), lats[len(lats)*99/100].Round(time.Millisecond), lats[len(lats)-1].Round(time.Millisecond))

	// Release everything, 20 at a time, as `container remove` does:
	// endpoint first, then the workload's addresses.
	next.Store(0)
	errs = make(chan error, clients)
	start = time.Now()
	for g := range clients {
		c := conns[g]
		wg.Go(func() {
			for {
				n := int(next.Add(1)) - 1
				if n >= len(got) {
					return
				}
				a := got[n]
				err := c.DS.DeleteKey(ctx, datastore.EndpointKey(a.node, a.name), 0)
				if err == nil {
					var ips []netip.Addr
					ips, err = c.IPAM.ReleaseHandle(ctx, a.node+"~"+a.name)
					if err == nil && (len(ips) != 1 || ips[0] != a.ip) {
						err = fmt.Errorf("released %v, want [%s]", ips, a.ip)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("releasing %s: %w", a.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	released := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	left, err := conns[0].DS.Keys(ctx, datastore.PrefixIPAM)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range left {
		t.Errorf("left behind after releasing everything: %s", k)
	}
	check = calicoctl(t, nil, env, "", "ipam", "check")
	if check.code != 0 || !strings.Contains(check.stdout, "IPAM is consistent") {
		t.Errorf("ipam check after releasing:\n%s", check)
	}
	if show := calicoctl(t, nil, env, "", "ipam", "show", "-o", "json"); strings.TrimSpace(show.stdout) != "[]" {
		t.Errorf("ipam show after releasing: %s", show)
	}
	t.Logf("FIGURE: IPAM release: %d addresses released by %d clients in %s; %d IPAM keys (blocks, claims, handles) left",
		len(got), clients, released.Round(time.Millisecond), len(left))
}

// freePort returns a port on 127.0.0.1 that nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
