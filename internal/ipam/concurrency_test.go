package ipam

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

// TestConcurrentAutoAssign: 20 goroutines x 50 assignments over 5 hosts into
// one /22 (1022 usable addresses in 16 blocks), so hosts race to claim
// blocks, run out of blocks, and borrow from each other at the end.
func TestConcurrentAutoAssign(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.50.0.0/22"})

	const workers, each, nodes = 20, 50, 5
	var mu sync.Mutex
	got := map[netip.Addr]string{}
	live := map[string]bool{}
	var wg sync.WaitGroup
	var conflicts atomic.Uint64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			// Each worker has its own IPAM, as separate clients would.
			m := New(datastore.Adopt(cli))
			defer func() { conflicts.Add(m.Conflicts()) }()
			node := fmt.Sprintf("node%d", w%nodes)
			for i := range each {
				h := fmt.Sprintf("w%d-%d", w, i)
				ip, err := m.AutoAssign(ctx, h, node, 4, nil)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", h, err)
					return
				}
				mu.Lock()
				if prev, dup := got[ip]; dup {
					errs <- fmt.Errorf("%s given to %s and %s", ip, prev, h)
				}
				got[ip] = h
				live[h] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	t.Logf("%d transactions lost a race and were retried", conflicts.Load())
	for err := range errs {
		t.Fatal(err)
	}
	if len(got) != workers*each {
		t.Fatalf("%d distinct addresses, want %d", len(got), workers*each)
	}
	mustCheck(t, m, ctx, live)
	if n, err := m.InUse(ctx, "10.50.0.0/22"); err != nil || n != workers*each {
		t.Errorf("InUse = %d, %v", n, err)
	}

	// Release everything, concurrently too, half by address, half by handle.
	var rwg sync.WaitGroup
	sem := make(chan struct{}, workers)
	for ip, h := range got {
		sem <- struct{}{}
		rwg.Go(func() {
			defer func() { <-sem }()
			var err error
			if ip.As4()[3]%2 == 0 {
				var owner string
				owner, err = m.Release(ctx, ip)
				if err == nil && owner != h {
					err = fmt.Errorf("release %s: owner %s, want %s", ip, owner, h)
				}
			} else {
				var ips []netip.Addr
				ips, err = m.ReleaseHandle(ctx, h)
				if err == nil && (len(ips) != 1 || ips[0] != ip) {
					err = fmt.Errorf("release handle %s: %v, want [%s]", h, ips, ip)
				}
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	rwg.Wait()
	blocks, err := m.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.Used != 0 {
			t.Errorf("block %s still has %d allocations", b.CIDR, b.Used)
		}
	}
	if r, _ := cli.Get(ctx, datastore.PrefixHandles, clientv3.WithPrefix(), clientv3.WithCountOnly()); r.Count != 0 {
		t.Errorf("%d handles left", r.Count)
	}
	mustCheck(t, m, ctx, map[string]bool{})
}

// Environment of a helper process (see TestHelperProcess).
const (
	envEtcd  = "IPAM_HELPER_ETCD"
	envID    = "IPAM_HELPER_ID"
	envNode  = "IPAM_HELPER_NODE"
	envStart = "IPAM_HELPER_START"
	envCount = "IPAM_HELPER_COUNT"
)

// TestHelperProcess is not a test: TestMultiProcess runs the test binary
// again with it selected, to be a separate allocating process.
func TestHelperProcess(t *testing.T) {
	url := os.Getenv(envEtcd)
	if url == "" {
		t.Skip("helper process only")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer cli.Close()
	m := New(datastore.Adopt(cli))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, _ := strconv.Atoi(os.Getenv(envCount))
	start, _ := strconv.ParseInt(os.Getenv(envStart), 10, 64)
	// Start together with the other helpers, so they really contend.
	time.Sleep(time.Until(time.Unix(0, start)))
	for i := range n {
		ip, err := m.AutoAssign(ctx, fmt.Sprintf("p%s-%d", os.Getenv(envID), i), os.Getenv(envNode), 4, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(ip)
	}
	fmt.Printf("conflicts %d\n", m.Conflicts())
	os.Exit(0)
}

// TestMultiProcess runs three processes assigning at once for the same node
// against one etcd: nothing but etcd transactions keeps them apart.
func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	url := etcdtest.Start(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	m := New(datastore.Adopt(cli))
	ctx := context.Background()
	addPool(t, cli, api.Pool{CIDR: "10.60.0.0/24"})

	const procs, each = 3, 50
	start := time.Now().Add(1500 * time.Millisecond).UnixNano()
	var wg sync.WaitGroup
	outs := make([]bytes.Buffer, procs)
	errs := make([]error, procs)
	for p := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			envEtcd+"="+url,
			envID+"="+strconv.Itoa(p),
			envNode+"=shared-node",
			envCount+"="+strconv.Itoa(each),
			envStart+"="+strconv.FormatInt(start, 10))
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outs[p], &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := cmd.Wait(); err != nil {
				errs[p] = fmt.Errorf("helper %d: %v: %s", p, err, stderr.String())
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[netip.Addr]int{}
	live := map[string]bool{}
	conflicts := 0
	for p := range procs {
		sc := bufio.NewScanner(&outs[p])
		n := 0
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if c, ok := strings.CutPrefix(line, "conflicts "); ok {
				n, _ := strconv.Atoi(c)
				conflicts += n
				continue
			}
			ip, err := netip.ParseAddr(line)
			if err != nil {
				continue // test framework chatter
			}
			if prev, dup := seen[ip]; dup {
				t.Errorf("%s given to process %d and %d", ip, prev, p)
			}
			seen[ip] = p
			live[fmt.Sprintf("p%d-%d", p, n)] = true
			n++
		}
		if n != each {
			t.Errorf("process %d printed %d addresses, want %d", p, n, each)
		}
	}
	if len(seen) != procs*each {
		t.Errorf("%d distinct addresses, want %d", len(seen), procs*each)
	}
	// Not asserted (timing decides), but shows the processes did collide.
	t.Logf("%d transactions lost a race and were retried", conflicts)
	mustCheck(t, m, ctx, live)
	// Three blocks' worth (150 of 254): all claimed by the one node.
	if b, _ := m.BlocksOf(ctx, "shared-node"); len(b) != 3 {
		t.Errorf("shared-node has blocks %v, want 3", b)
	}
}

func BenchmarkAutoAssign(b *testing.B) {
	cli := etcdtest.Client(b)
	addPool(b, cli, api.Pool{CIDR: "10.0.0.0/8"})
	m := New(datastore.Adopt(cli))
	ctx := context.Background()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.AutoAssign(ctx, "bench-"+strconv.Itoa(i), "bench-node", 4, nil); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestAssignBatches: 40 Assigns at once on one node (one IPAM, as the
// in-process client makes them) over two blocks, one of which no one has
// claimed yet, plus an address asked for twice and one outside every pool.
// Each gets its own answer: every fresh address for its own handle, one of
// the twin requests and not the other, the stray a not-in-pool error; and
// ipam check finds nothing leaked or inconsistent.
func TestAssignBatches(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.60.0.0/24"})
	if err := m.Assign(ctx, netip.MustParseAddr("10.60.0.1"), "first", "n1"); err != nil { // claims 10.60.0.0/26
		t.Fatal(err)
	}
	type req struct {
		ip     netip.Addr
		handle string
	}
	var reqs []req
	for i := range 40 {
		reqs = append(reqs, req{netip.MustParseAddr(fmt.Sprintf("10.60.0.%d", 2+i+i/30*40)), fmt.Sprintf("h%d", i)}) // 30 in the claimed block, 10 in 10.60.0.64/26
	}
	reqs = append(reqs, req{netip.MustParseAddr("10.60.0.2"), "twin"}, req{netip.MustParseAddr("10.61.0.1"), "stray"})
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, r := range reqs {
		wg.Go(func() {
			<-start
			errs[i] = m.Assign(ctx, r.ip, r.handle, "n1")
		})
	}
	commits0 := m.Conflicts()
	close(start)
	wg.Wait()
	twinWon := 0
	for i, r := range reqs {
		switch {
		case r.handle == "stray":
			if !errors.Is(errs[i], ErrNotInPool) {
				t.Errorf("%s outside every pool: %v", r.ip, errs[i])
			}
			continue
		case r.ip == netip.MustParseAddr("10.60.0.2"):
			if errs[i] == nil {
				twinWon++
			} else if !errors.Is(errs[i], ErrAlreadyAssigned) {
				t.Errorf("%s for %s: %v, want taken", r.ip, r.handle, errs[i])
			}
			continue
		case errs[i] != nil:
			t.Errorf("%s for %s: %v", r.ip, r.handle, errs[i])
			continue
		}
		info, err := m.Info(ctx, r.ip)
		if err != nil || !info.Assigned || info.Handle != r.handle {
			t.Errorf("%s: %+v %v, want assigned to %s", r.ip, info, err, r.handle)
		}
	}
	if twinWon != 1 {
		t.Errorf("10.60.0.2 asked for twice: %d requests got it, want 1", twinWon)
	}
	live := map[string]bool{"first": true}
	for _, r := range reqs {
		if r.handle != "stray" {
			live[r.handle] = true
		}
	}
	mustCheck(t, m, ctx, live)
	t.Logf("FIGURE: %d concurrent Assigns on one node: %d lost compare-and-swaps", len(reqs), m.Conflicts()-commits0)
}
