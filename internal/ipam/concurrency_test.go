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

// gatedStore holds the first Commit until open is closed, counting
// commits, so a test can queue callers behind the first one's turn.
type gatedStore struct {
	Store
	open    chan struct{}
	first   sync.Once
	commits atomic.Int64
	reads   atomic.Int64
}

func (g *gatedStore) Read(ctx context.Context, reads ...datastore.Read) ([][]datastore.Record, int64, error) {
	g.reads.Add(1)
	return g.Store.Read(ctx, reads...)
}

func (g *gatedStore) Commit(ctx context.Context, guards []datastore.Guard, writes []datastore.Write) (bool, error) {
	g.first.Do(func() { <-g.open })
	g.commits.Add(1)
	return g.Store.Commit(ctx, guards, writes)
}

// TestAutoAssignBatches: 100 AutoAssigns for one node queued behind a
// first one (one IPAM, as the agent serving a burst of CNI ADDs makes
// them), over two /26 blocks of which neither exists yet, plus two for one
// handle, one naming a pool that does not exist and one IPv6 without an
// IPv6 pool. Every request gets its own answer: distinct addresses, each
// held by its handle, the twins both (a handle may hold several), the two
// bad ones their own error; ipam check finds nothing leaked; and the
// queued requests took a handful of transactions, not one each.
func TestAutoAssignBatches(t *testing.T) {
	cli, _, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.70.0.0/24"})
	g := &gatedStore{Store: datastore.Adopt(cli), open: make(chan struct{})}
	m := New(g)
	type req struct {
		handle string
		family int
		pools  []string
	}
	reqs := []req{{"twin", 4, nil}, {"twin", 4, nil}, {"nopool", 4, []string{"10.71.0.0/24"}}, {"v6", 6, nil}}
	for i := range 100 {
		reqs = append(reqs, req{fmt.Sprintf("h%d", i), 4, nil})
	}
	firstDone := make(chan error, 1)
	go func() { _, err := m.AutoAssign(ctx, "first", "n1", 4, nil); firstDone <- err }()
	// The first caller holds the node's turn, stopped in its commit.
	for {
		m.mu.Lock()
		n := len(m.nodeLocks["n1"])
		m.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	ips := make([]netip.Addr, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { ips[i], errs[i] = m.AutoAssign(ctx, r.handle, "n1", r.family, r.pools) })
	}
	for { // all queued
		m.mu.Lock()
		n := len(m.pendingAuto["n1"])
		m.mu.Unlock()
		if n == len(reqs) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	reads0 := g.reads.Load()
	close(g.open)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	reads := g.reads.Load() - reads0
	seen := map[netip.Addr]string{}
	live := map[string]bool{"first": true}
	for i, r := range reqs {
		switch r.handle {
		case "nopool":
			if !errors.Is(errs[i], ErrNoPools) {
				t.Errorf("a pool that does not exist: %v, %v", ips[i], errs[i])
			}
			continue
		case "v6":
			if !errors.Is(errs[i], ErrNoPools) {
				t.Errorf("IPv6 without an IPv6 pool: %v, %v", ips[i], errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Errorf("%s: %v", r.handle, errs[i])
			continue
		}
		if prev, dup := seen[ips[i]]; dup {
			t.Errorf("%s given to %s and %s", ips[i], prev, r.handle)
		}
		seen[ips[i]] = r.handle
		live[r.handle] = true
		info, err := m.Info(ctx, ips[i])
		if err != nil || !info.Assigned || info.Handle != r.handle {
			t.Errorf("%s: %+v %v, want assigned to %s", ips[i], info, err, r.handle)
		}
	}
	if len(seen) != 102 {
		t.Errorf("%d distinct addresses, want 102", len(seen))
	}
	mustCheck(t, m, ctx, live)
	if b, _ := m.BlocksOf(ctx, "n1"); len(b) != 2 {
		t.Errorf("n1 has blocks %v, want 2", b)
	}
	// 102 addresses past the first: the rest of its block in one round
	// (the second twin waits for a later one), a new block for the first
	// left (the twin) alone, the rest in a third round: 3 transactions,
	// plus any lost races.
	commits := g.commits.Load() - 1
	t.Logf("FIGURE: %d queued AutoAssigns on one node: %d transactions (%d lost a race), %d reads", len(reqs), commits, m.Conflicts(), reads)
	if commits-int64(m.Conflicts()) > 6 {
		t.Errorf("%d transactions won for %d queued requests: they were not batched", commits-int64(m.Conflicts()), len(reqs))
	}
}

// BenchmarkAutoAssignBurst: bursts of 20 AutoAssigns at once for one node
// through one IPAM (the agent serving 20 CNI ADDs), with the round trips
// and transactions each assignment cost.
func BenchmarkAutoAssignBurst(b *testing.B) {
	cli := etcdtest.Client(b)
	addPool(b, cli, api.Pool{CIDR: "10.0.0.0/8"})
	g := &gatedStore{Store: datastore.Adopt(cli), open: make(chan struct{})}
	close(g.open)
	m := New(g)
	ctx := context.Background()
	const burst = 20
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for range burst {
			h := "bench-" + strconv.Itoa(n)
			n++
			wg.Go(func() {
				if _, err := m.AutoAssign(ctx, h, "bench-node", 4, nil); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	b.ReportMetric(float64(g.reads.Load()+g.commits.Load())/float64(n), "roundtrips/assign")
	b.ReportMetric(float64(g.commits.Load())/float64(n), "commits/assign")
}

// countingStore counts the bytes of record values the allocator reads.
type countingStore struct {
	Store
	valueBytes atomic.Int64
}

func (c *countingStore) Read(ctx context.Context, reads ...datastore.Read) ([][]datastore.Record, int64, error) {
	recs, rev, err := c.Store.Read(ctx, reads...)
	for _, r := range recs {
		for _, e := range r {
			c.valueBytes.Add(int64(len(e.Value)))
		}
	}
	return recs, rev, err
}

// BenchmarkAutoAssignNextTo: one more AutoAssign on a node that already
// holds 10 or 1000 addresses (1000 fill 16 /26 blocks), released again
// outside the timer, by another process (its own IPAM), so every round sees
// the same blocks, as a node's adds see them between releases; reports the
// value bytes each assignment read from etcd.
func BenchmarkAutoAssignNextTo(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			cli := etcdtest.Client(b)
			addPool(b, cli, api.Pool{CIDR: "10.0.0.0/16"})
			cs := &countingStore{Store: datastore.Adopt(cli)}
			m := New(cs)
			other := New(datastore.Adopt(cli))
			other.releases = new(atomic.Uint64) // another process's allocator
			ctx := context.Background()
			for i := range n {
				if _, err := m.AutoAssign(ctx, "fill-"+strconv.Itoa(i), "bench-node", 4, nil); err != nil {
					b.Fatal(err)
				}
			}
			cs.valueBytes.Store(0)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				h := "bench-" + strconv.Itoa(i)
				i++
				if _, err := m.AutoAssign(ctx, h, "bench-node", 4, nil); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				read := cs.valueBytes.Load()
				if _, err := other.ReleaseHandle(ctx, h); err != nil {
					b.Fatal(err)
				}
				cs.valueBytes.Store(read)
				b.StartTimer()
			}
			b.ReportMetric(float64(cs.valueBytes.Load())/float64(i), "valueB/assign")
		})
	}
}

// valueReads records which keys an allocator read with their values.
type valueReads struct {
	Store
	mu   sync.Mutex
	keys map[string]int
}

func (v *valueReads) Read(ctx context.Context, reads ...datastore.Read) ([][]datastore.Record, int64, error) {
	recs, rev, err := v.Store.Read(ctx, reads...)
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, r := range recs {
		for _, e := range r {
			if e.Value != nil {
				v.keys[e.Key]++
			}
		}
	}
	return recs, rev, err
}

func (v *valueReads) take() map[string]int {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := v.keys
	v.keys = map[string]int{}
	return k
}

// TestAutoAssignFullBlocks: a node's full blocks are read for their
// revision only, and not even that within the recheck interval of finding
// them unchanged, unless an allocator of this process released an address
// since; a full block that another process frees an address in is read
// again at the next check and gives the lowest free address: the
// allocator never writes from what it last saw of a block that changed.
func TestAutoAssignFullBlocks(t *testing.T) {
	cli, _, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.80.0.0/24"})
	vr := &valueReads{Store: datastore.Adopt(cli), keys: map[string]int{}}
	m := New(vr)
	m.recheck = time.Hour               // the window ends when the test says, not the clock
	other := New(datastore.Adopt(cli))  // another process on the same node:
	other.releases = new(atomic.Uint64) // its releases are not this process's
	live := map[string]bool{}
	assign := func(m *IPAM, h string) netip.Addr {
		t.Helper()
		ip, err := m.AutoAssign(ctx, h, "n1", 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		live[h] = true
		return ip
	}
	// 10.80.0.0/26 holds 63 (its pool's network address is never
	// assigned), 10.80.0.64/26 all 64, and 3 go to 10.80.0.128/26.
	for i := range 63 + 64 + 3 {
		assign(m, fmt.Sprintf("w%d", i))
	}
	full := datastore.BlockKey("10.80.0.64/26")
	vr.take()
	if ip := assign(m, "next"); ip != a("10.80.0.131") {
		t.Fatalf("next: %s, want 10.80.0.131", ip)
	}
	if n := vr.take()[full]; n != 0 {
		t.Errorf("the full block %s was read with its value %d times", full, n)
	}

	// Another process frees 10.80.0.70 in the full block. Within
	// fullRecheck of finding its blocks full this allocator does not look
	// (the full block is not read at all) and hands out the next address
	// of its open block; once the window is over it reads the block again
	// and gives the freed one, the lowest.
	if owner, err := other.Release(ctx, a("10.80.0.70")); err != nil || owner != "w69" {
		t.Fatalf("release: %q, %v", owner, err)
	}
	delete(live, "w69")
	if ip := assign(m, "early"); ip != a("10.80.0.132") {
		t.Fatalf("early: %s, want 10.80.0.132 (the full blocks trusted)", ip)
	}
	if n := vr.take()[full]; n != 0 {
		t.Errorf("the trusted full block was read with its value %d times", n)
	}
	m.mu.Lock()
	fc := m.fullChecked["n1"]
	fc.at = fc.at.Add(-m.recheck)
	m.fullChecked["n1"] = fc
	m.mu.Unlock()
	if ip := assign(m, "refill"); ip != a("10.80.0.70") {
		t.Fatalf("refill: %s, want the freed 10.80.0.70", ip)
	}
	if n := vr.take()[full]; n == 0 {
		t.Errorf("the block freed in was not read again")
	}
	// Full again: the next round reads it once (its new revision is not
	// the one decoded), and the one after that not at all.
	if ip := assign(m, "after"); ip != a("10.80.0.133") {
		t.Fatalf("after: %s, want 10.80.0.133", ip)
	}
	vr.take()
	if ip := assign(m, "after2"); ip != a("10.80.0.134") {
		t.Fatalf("after2: %s, want 10.80.0.134", ip)
	}
	if n := vr.take()[full]; n != 0 {
		t.Errorf("the full block was read with its value %d times after it filled again", n)
	}
	// This process's own release ends the trust at once.
	if owner, err := m.Release(ctx, a("10.80.0.71")); err != nil || owner != "w70" {
		t.Fatalf("release: %q, %v", owner, err)
	}
	delete(live, "w70")
	if ip := assign(m, "own"); ip != a("10.80.0.71") {
		t.Fatalf("own: %s, want the address this process freed, 10.80.0.71", ip)
	}
	// So does another allocator's of the same process (the agent's
	// sweeper beside its CNI server).
	if ip := assign(m, "full-again"); ip != a("10.80.0.135") {
		t.Fatalf("full-again: %s, want 10.80.0.135", ip)
	}
	if ip := assign(m, "trusting-again"); ip != a("10.80.0.136") { // reads the full blocks unchanged: trusts them
		t.Fatalf("trusting-again: %s, want 10.80.0.136", ip)
	}
	sibling := New(datastore.Adopt(cli))
	if owner, err := sibling.Release(ctx, a("10.80.0.72")); err != nil || owner != "w71" {
		t.Fatalf("release: %q, %v", owner, err)
	}
	delete(live, "w71")
	if ip := assign(m, "sibling"); ip != a("10.80.0.72") {
		t.Fatalf("sibling: %s, want the address this process's other allocator freed, 10.80.0.72", ip)
	}
	// The other process takes an address while this one holds a stale
	// view; neither hands out an address twice.
	ipOther := assign(other, "other")
	if ip := assign(m, "mine"); ip == ipOther {
		t.Fatalf("%s given to both processes", ip)
	}
	mustCheck(t, m, ctx, live)
}

// TestConcurrentAssignRelease: processes on one node (each its own IPAM)
// assign and release at random at once, in blocks that fill and gain free
// addresses again: no address is ever held by two handles, and ipam check
// finds nothing leaked at the end.
func TestConcurrentAssignRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.81.0.0/24"})
	const workers, rounds = 6, 60
	var mu sync.Mutex
	holder := map[netip.Addr]string{}
	live := map[string]bool{}
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			m := New(datastore.Adopt(cli))
			var mine []netip.Addr
			for i := range rounds {
				if len(mine) > 0 && (i%3 == 2 || len(mine) > 35) {
					ip := mine[0]
					mine = mine[1:]
					mu.Lock()
					h := holder[ip]
					delete(holder, ip)
					delete(live, h)
					mu.Unlock()
					if owner, err := m.Release(ctx, ip); err != nil || owner != h {
						errs <- fmt.Errorf("release %s: %q, %v (want %s)", ip, owner, err, h)
						return
					}
					continue
				}
				h := fmt.Sprintf("w%d-%d", w, i)
				ip, err := m.AutoAssign(ctx, h, "n1", 4, nil)
				if err != nil {
					errs <- fmt.Errorf("%s: %w", h, err)
					return
				}
				mu.Lock()
				if prev, dup := holder[ip]; dup {
					errs <- fmt.Errorf("%s given to %s while %s held it", ip, h, prev)
				}
				holder[ip] = h
				live[h] = true
				mu.Unlock()
				mine = append(mine, ip)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustCheck(t, m, ctx, live)
}
