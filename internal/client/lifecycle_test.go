package client

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
)

// A rerun of container add is done when the record is what the request
// would make; anything else is another workload's endpoint.
func TestSameWorkload(t *testing.T) {
	req := WorkloadRequest{Node: "h1", Name: "w", IPs: []string{"10.0.0.5", "auto", "auto6"}, NetnsPath: "/run/netns/w",
		Interface: "eth0", Orchestrator: "netns", Profiles: []string{"P"}}
	fixed := []netip.Addr{netip.MustParseAddr("10.0.0.5")}
	rec := api.Endpoint{Node: "h1", Workload: "w", Orchestrator: "netns", NetnsPath: "/run/netns/w",
		InterfaceName: api.WorkloadIfaceName("h1", "w"), WorkloadIface: "eth0", Profiles: []string{"P"},
		IPv4Nets: []string{"10.0.0.9/32", "10.0.0.5/32"}, IPv6Nets: []string{"fd00::7/128"}}
	if !sameWorkload(rec, req, fixed) {
		t.Fatal("the record the request made is not recognised")
	}
	change := map[string]func(*api.Endpoint){
		"another interface": func(e *api.Endpoint) { e.InterfaceName = api.WorkloadIfaceName("h1", "x") },
		"another netns":     func(e *api.Endpoint) { e.NetnsPath = "/run/netns/x" },
		"another profile":   func(e *api.Endpoint) { e.Profiles = []string{"Q"} },
		"no profile":        func(e *api.Endpoint) { e.Profiles = nil },
		"inside interface":  func(e *api.Endpoint) { e.WorkloadIface = "cali0" },
		"orchestrator":      func(e *api.Endpoint) { e.Orchestrator = "docker" },
		"container id":      func(e *api.Endpoint) { e.ContainerID = "abc" },
		"fixed address":     func(e *api.Endpoint) { e.IPv4Nets = []string{"10.0.0.9/32", "10.0.0.6/32"} },
		"an extra address":  func(e *api.Endpoint) { e.IPv4Nets = append(e.IPv4Nets, "10.0.0.10/32") },
		"no IPv6 for auto6": func(e *api.Endpoint) { e.IPv6Nets = nil },
		"IPv6 for auto": func(e *api.Endpoint) {
			e.IPv4Nets = []string{"10.0.0.5/32"}
			e.IPv6Nets = []string{"fd00::7/128", "fd00::8/128"}
		},
	}
	for what, f := range change {
		e := rec
		e.IPv4Nets = append([]string{}, rec.IPv4Nets...)
		f(&e)
		if sameWorkload(e, req, fixed) {
			t.Errorf("%s: taken for the same workload", what)
		}
	}
	// No profiles on either side is the same, however the empty list is written.
	r2, e2 := req, rec
	r2.Profiles, e2.Profiles = nil, []string{}
	if !sameWorkload(e2, r2, fixed) {
		t.Error("empty profile lists differ")
	}
}

// Runs for one workload take turns; runs for others never wait for them;
// the lock file goes with the last unlock.
func TestLockWorkload(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CALICO_STATE_DIR", dir)
	ctx := context.Background()
	unlock, err := lockWorkload(ctx, "h1", "w")
	if err != nil {
		t.Fatal(err)
	}
	// Another workload (of many: no shared file) locks at once.
	for i := range 50 {
		other, err := lockWorkload(ctx, "h1", fmt.Sprintf("o%d", i))
		if err != nil {
			t.Fatalf("another workload waited for w's lock: %v", err)
		}
		defer other()
	}
	// The same workload waits until w's holder is done, from other
	// processes too (each waiter has its own open file: flock is per file).
	got := make(chan time.Time, 2)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u, err := lockWorkload(ctx, "h1", "w")
			if err != nil {
				t.Error(err)
				got <- time.Time{}
				return
			}
			got <- time.Now()
			time.Sleep(20 * time.Millisecond)
			u()
		}()
	}
	time.Sleep(30 * time.Millisecond)
	released := time.Now()
	unlock()
	wg.Wait()
	a, b := <-got, <-got
	if a.Before(released) || b.Before(released) {
		t.Fatal("a second run of w got the lock while the first held it")
	}
	if d := max(b.Sub(a), a.Sub(b)); d < 15*time.Millisecond {
		t.Fatalf("both waiters held w's lock at once (%v apart)", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "run", "calico", "locks", "workload-"+api.WorkloadIfaceName("h1", "w"))); !os.IsNotExist(err) {
		t.Fatalf("w's lock file is left after the last unlock: %v", err)
	}
	// A cancelled wait says who holds it up.
	u, _ := lockWorkload(ctx, "h1", "w")
	defer u()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := lockWorkload(cctx, "h1", "w"); err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("a wait past the deadline: %v", err)
	}
}

// The per-workload lock is taken twice per add (and per remove): a file
// made, locked, checked and removed each time.
func BenchmarkLockWorkload(b *testing.B) {
	b.Setenv("CALICO_STATE_DIR", b.TempDir())
	ctx := context.Background()
	b.ReportAllocs()
	for i := range b.N {
		u, err := lockWorkload(ctx, "h1", fmt.Sprintf("w%d", i%64))
		if err != nil {
			b.Fatal(err)
		}
		u()
	}
}
