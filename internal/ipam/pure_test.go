package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

func TestBitmapFirstFree(t *testing.T) {
	tests := []struct {
		name                string
		n                   int
		set                 []int
		skipFirst, skipLast bool
		want                int
	}{
		{"empty", 64, nil, false, false, 0},
		{"skip network", 64, nil, true, false, 1},
		{"skip broadcast only", 64, []int{0}, false, true, 1},
		{"first taken", 64, []int{0, 1, 2}, false, false, 3},
		{"only last left but reserved", 64, seq(0, 63), false, true, -1},
		{"only last left", 64, seq(0, 63), false, false, 63},
		{"full", 64, seq(0, 64), false, false, -1},
		{"small block", 4, []int{0, 1}, false, false, 2},
		{"small block full", 4, seq(0, 4), false, false, -1},
		{"small block reserved", 4, []int{1, 2}, true, true, -1},
		{"second word", 256, seq(0, 100), false, false, 100},
		{"one address", 1, nil, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBitmap(tt.n)
			for _, i := range tt.set {
				b.set(i)
			}
			if got := b.firstFree(tt.n, tt.skipFirst, tt.skipLast); got != tt.want {
				t.Errorf("firstFree = %d, want %d", got, tt.want)
			}
			if got := b.count(); got != len(tt.set) {
				t.Errorf("count = %d, want %d", got, len(tt.set))
			}
		})
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestBlockOrdinals(t *testing.T) {
	for _, tt := range []struct {
		cidr string
		ord  int
		addr string
	}{
		{"192.168.100.64/26", 0, "192.168.100.64"},
		{"192.168.100.64/26", 63, "192.168.100.127"},
		{"10.0.0.0/20", 4095, "10.0.15.255"},
		{"10.0.255.0/24", 255, "10.0.255.255"},
		{"fd00::40/122", 5, "fd00::45"},
		{"fd00:0:0:1:ffff:ffff:ffff:ffc0/122", 63, "fd00::1:ffff:ffff:ffff:ffff"},
	} {
		st, err := newBlockState(api.Block{CIDR: tt.cidr})
		if err != nil {
			t.Fatal(err)
		}
		if got := st.addr(tt.ord).String(); got != tt.addr {
			t.Errorf("%s: addr(%d) = %s, want %s", tt.cidr, tt.ord, got, tt.addr)
		}
		if got, ok := st.ordinal(netip.MustParseAddr(tt.addr)); !ok || got != tt.ord {
			t.Errorf("%s: ordinal(%s) = %d, %v; want %d", tt.cidr, tt.addr, got, ok, tt.ord)
		}
	}
	st, _ := newBlockState(api.Block{CIDR: "192.168.100.64/26"})
	if _, ok := st.ordinal(netip.MustParseAddr("192.168.100.128")); ok {
		t.Error("address outside the block got an ordinal")
	}
}

func TestNewBlockStateRejects(t *testing.T) {
	for _, rec := range []api.Block{
		{CIDR: "nonsense"},
		{CIDR: "10.0.0.1/26"},   // host bits set
		{CIDR: "10.0.0.0/8"},    // too large
		{CIDR: "fd00::/64"},     // too large
		{CIDR: "10.0.0.0/26x"},  // junk
		{CIDR: "10.0.0.0/33"},   // not a prefix
		{CIDR: "fd00::1/122"},   // host bits set
		{CIDR: "10.0.0.0/-1"},   // not a prefix
		{CIDR: "10.0.0.0"},      // no length
		{CIDR: "::ffff:10.0.0"}, // not an address
	} {
		if _, err := newBlockState(rec); err == nil {
			t.Errorf("newBlockState(%q) accepted it", rec.CIDR)
		}
	}
	st, err := newBlockState(api.Block{CIDR: "10.0.0.0/30", Allocations: map[int]string{0: "a", 7: "b", 2: ""}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.bad) != 2 {
		t.Errorf("bad = %q, want the out-of-range and the empty-handle allocation", st.bad)
	}
	if !st.used.has(2) {
		t.Error("an allocation with an empty handle must still count as taken")
	}
}

func TestBlockBitsFor(t *testing.T) {
	for _, tt := range []struct {
		pool    string
		size    int
		want    int
		wantErr string
	}{
		{"192.168.100.0/24", 0, 26, ""},
		{"192.168.100.0/24", 28, 28, ""},
		{"192.168.100.0/28", 0, 28, ""}, // pool smaller than a block
		{"192.168.100.0/30", 26, 30, ""},
		{"fd00::/64", 0, 122, ""},
		{"fd00::/124", 0, 124, ""},
		{"10.0.0.0/8", 12, 0, "too large"},
		{"10.0.0.0/8", 33, 0, "not a valid prefix length"},
		{"fd00::/48", 100, 0, "too large"},
	} {
		got, err := blockBitsFor(netip.MustParsePrefix(tt.pool), tt.size)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s /%d: err = %v, want %q", tt.pool, tt.size, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("%s /%d = %d, %v; want %d", tt.pool, tt.size, got, err, tt.want)
		}
	}
}

func mkPool(t testing.TB, cidr string, mods ...func(*api.Pool)) poolInfo {
	t.Helper()
	p := api.Pool{CIDR: cidr}
	for _, f := range mods {
		f(&p)
	}
	b := fmt.Appendf(nil, `{"cidr":%q,"blockSize":%d,"disabled":%v}`, p.CIDR, p.BlockSize, p.Disabled)
	pi := parsePool(datastore.PoolKey(cidr), b, 1)
	if pi.err != nil {
		t.Fatal(pi.err)
	}
	return pi
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestChooseFreeBlock(t *testing.T) {
	pool := mkPool(t, "192.168.100.0/24")
	var existing []netip.Prefix
	seen := map[netip.Prefix]bool{}
	// The pool has four blocks; each choice must be new, then none is left.
	for range 4 {
		b, ok := chooseFreeBlock(pool, existing, nodeSeed("host1"))
		if !ok {
			t.Fatalf("no block with %v taken", existing)
		}
		if seen[b] || !pool.containsBlock(b) || b.Bits() != 26 {
			t.Fatalf("bad choice %s with %v taken", b, existing)
		}
		seen[b] = true
		existing = append(existing, b)
	}
	if b, ok := chooseFreeBlock(pool, existing, 0); ok {
		t.Errorf("full pool gave %s", b)
	}

	// Seeds spread hosts: the start is seed mod 4.
	for seed := range uint64(4) {
		b, _ := chooseFreeBlock(pool, nil, seed)
		if want := pool.blockAt(seed); b != want {
			t.Errorf("seed %d: got %s, want %s", seed, b, want)
		}
	}
	// Wraps past the end of the pool.
	b, _ := chooseFreeBlock(pool, prefixes("192.168.100.192/26"), 3)
	if b.String() != "192.168.100.0/26" {
		t.Errorf("wrap: got %s", b)
	}
	// A block of another size (a /25 left from an earlier pool) covers two candidates.
	b, ok := chooseFreeBlock(pool, prefixes("192.168.100.0/25", "192.168.100.128/26"), 0)
	if !ok || b.String() != "192.168.100.192/26" {
		t.Errorf("odd block: got %s %v", b, ok)
	}
	b, ok = chooseFreeBlock(pool, prefixes("192.168.100.0/25", "192.168.100.130/31", "10.0.0.0/26"), 1)
	if !ok || b.String() != "192.168.100.192/26" {
		t.Errorf("small odd block: got %s %v", b, ok)
	}

	// A huge IPv6 pool: the search stops after the existing blocks, not 2^58 candidates.
	v6 := mkPool(t, "fd00::/64")
	seed := nodeSeed("h")
	ex := []netip.Prefix{v6.blockAt(seed % v6.numBlocks()), v6.blockAt((seed + 1) % v6.numBlocks())}
	b, ok = chooseFreeBlock(v6, ex, seed)
	if !ok || b != v6.blockAt((seed+2)%v6.numBlocks()) || b.Bits() != 122 || !v6.containsBlock(b) {
		t.Errorf("v6: got %s %v", b, ok)
	}
	// A pool smaller than a block is its own single block.
	small := mkPool(t, "10.9.9.0/29")
	b, ok = chooseFreeBlock(small, nil, 12345)
	if !ok || b.String() != "10.9.9.0/29" {
		t.Errorf("small pool: got %s %v", b, ok)
	}
}

func TestReservedIn(t *testing.T) {
	pool := mkPool(t, "192.168.100.0/24")
	for _, tt := range []struct {
		block       string
		first, last bool
	}{
		{"192.168.100.0/26", true, false},
		{"192.168.100.64/26", false, false},
		{"192.168.100.192/26", false, true},
	} {
		f, l := pool.reservedIn(netip.MustParsePrefix(tt.block))
		if f != tt.first || l != tt.last {
			t.Errorf("%s: got %v %v", tt.block, f, l)
		}
	}
	if f, l := mkPool(t, "10.0.0.0/31").reservedIn(netip.MustParsePrefix("10.0.0.0/31")); f || l {
		t.Error("a /31 pool has no network or broadcast address")
	}
	if f, l := mkPool(t, "fd00::/120").reservedIn(netip.MustParsePrefix("fd00::/122")); f || l {
		t.Error("IPv6 has no broadcast address")
	}
}

func TestSelectPools(t *testing.T) {
	pools := []poolInfo{
		mkPool(t, "192.168.100.0/24"),
		mkPool(t, "10.0.0.0/16"),
		mkPool(t, "172.16.0.0/24", func(p *api.Pool) { p.Disabled = true }),
		mkPool(t, "fd00::/64"),
	}
	got, err := selectPools(pools, 4, nil)
	if err != nil || poolList(got) != "10.0.0.0/16, 192.168.100.0/24" {
		t.Errorf("v4: %q %v", poolList(got), err)
	}
	got, err = selectPools(pools, 6, nil)
	if err != nil || poolList(got) != "fd00::/64" {
		t.Errorf("v6: %q %v", poolList(got), err)
	}
	got, err = selectPools(pools, 4, prefixes("192.168.100.0/24", "10.0.0.0/16"))
	if err != nil || poolList(got) != "192.168.100.0/24, 10.0.0.0/16" {
		t.Errorf("restricted: %q %v", poolList(got), err)
	}
	for _, tt := range []struct {
		family   int
		restrict []netip.Prefix
		kind     error
		msg      string
	}{
		{4, prefixes("172.16.0.0/24"), ErrNoPools, "pool 172.16.0.0/24 is disabled"},
		{4, prefixes("172.17.0.0/24"), ErrNoPools, "pool 172.17.0.0/24 does not exist"},
		{4, prefixes("fd00::/64"), ErrInvalid, "pool fd00::/64 is not an IPv4 pool"},
		{6, nil, nil, ""},
	} {
		_, err := selectPools(pools, tt.family, tt.restrict)
		if tt.kind == nil {
			if err != nil {
				t.Error(err)
			}
			continue
		}
		if !errors.Is(err, tt.kind) || !strings.HasPrefix(err.Error(), tt.msg) {
			t.Errorf("%v: got %v, want %q", tt.restrict, err, tt.msg)
		}
	}
	if _, err := selectPools(pools[:3], 6, nil); err == nil || err.Error() != "no enabled IPv6 pools; add one with calicoctl pool add CIDR" {
		t.Errorf("no v6 pools: %v", err)
	}
	if _, err := selectPools(nil, 4, nil); err == nil || err.Error() != "no pools configured; add one with calicoctl pool add CIDR" {
		t.Errorf("no pools: %v", err)
	}
}

func TestPoolForAddr(t *testing.T) {
	pools := []poolInfo{mkPool(t, "192.168.100.0/24"), mkPool(t, "192.168.100.128/25")}
	p, err := poolForAddr(pools, netip.MustParseAddr("192.168.100.200"))
	if err != nil || p.String() != "192.168.100.128/25" {
		t.Errorf("most specific pool: got %s %v", p, err)
	}
	_, err = poolForAddr(pools[:1], netip.MustParseAddr("192.168.5.1"))
	if err == nil || err.Error() != "192.168.5.1 is not in any pool; pools: 192.168.100.0/24" || !errors.Is(err, ErrNotInPool) {
		t.Errorf("outside: %v", err)
	}
}

// block builds a stored block for the pure tests.
func block(t testing.TB, cidr, affinity string, allocs map[int]string) storedBlock {
	t.Helper()
	rec := api.Block{CIDR: cidr, Affinity: affinity, Allocations: allocs}
	st, err := newBlockState(rec)
	if err != nil {
		t.Fatal(err)
	}
	return storedBlock{key: datastore.BlockKey(cidr), rev: 1, st: st}
}

func handle(id string, ips ...string) storedHandle {
	return storedHandle{key: datastore.HandleKey(id), rev: 1, h: api.Handle{ID: id, IPs: ips}}
}

func claimOf(node, cidr string) claim {
	return claim{key: datastore.AffinityKey(node, cidr), node: node, cidr: cidr, value: cidr, rev: 1}
}

func TestCheckSnapshot(t *testing.T) {
	pools := []poolInfo{mkPool(t, "192.168.100.0/24")}
	clean := snapshot{
		pools: pools,
		blocks: []storedBlock{
			block(t, "192.168.100.0/26", "a", map[int]string{1: "w1", 2: "w2"}),
			block(t, "192.168.100.64/26", "b", map[int]string{0: "w3"}),
		},
		handles: []storedHandle{handle("w1", "192.168.100.1"), handle("w2", "192.168.100.2"), handle("w3", "192.168.100.64")},
		claims:  []claim{claimOf("a", "192.168.100.0/26"), claimOf("b", "192.168.100.64/26")},
	}
	live := map[string]bool{"w1": true, "w2": true, "w3": true}
	if r := checkSnapshot(clean, live); !r.OK() {
		t.Fatalf("clean snapshot: %+v", r)
	}
	if r := checkSnapshot(clean, nil); !r.OK() {
		t.Fatalf("nil live handles must skip leak detection: %+v", r)
	}

	// A leak: w2's endpoint is gone but its address is still held.
	r := checkSnapshot(clean, map[string]bool{"w1": true, "w3": true})
	if want := []LeakedIP{{IP: "192.168.100.2", Handle: "w2", Block: "192.168.100.0/26"}}; !slices.Equal(r.Leaked, want) || len(r.Problems) != 0 {
		t.Errorf("leak: %+v", r)
	}

	tests := []struct {
		name string
		edit func(s *snapshot)
		want []string
	}{
		{"handle records an unallocated address", func(s *snapshot) {
			s.handles[0] = handle("w1", "192.168.100.1", "192.168.100.9")
		}, []string{"handle w1 records 192.168.100.9, but no block allocates it"}},
		{"handle records someone else's address", func(s *snapshot) {
			s.handles[0] = handle("w1", "192.168.100.1", "192.168.100.2")
		}, []string{"handle w1 records 192.168.100.2, but block 192.168.100.0/26 allocates it to w2"}},
		{"allocation without handle", func(s *snapshot) {
			s.handles = s.handles[1:]
		}, []string{"192.168.100.1 in block 192.168.100.0/26 is allocated to handle w1, which has no handle record"}},
		{"handle missing an address", func(s *snapshot) {
			s.handles[0] = handle("w1")
		}, []string{"192.168.100.1 in block 192.168.100.0/26 is allocated to handle w1, but the handle does not record it"}},
		{"missing claim", func(s *snapshot) {
			s.claims = s.claims[1:]
		}, []string{"block 192.168.100.0/26 is affine to a, but a's claim on it is missing"}},
		{"stale claim", func(s *snapshot) {
			s.claims = append(s.claims, claimOf("c", "192.168.100.64/26"), claimOf("c", "192.168.100.128/26"))
		}, []string{
			"node c claims block 192.168.100.64/26, but the block's affinity is \"b\"",
			"node c claims block 192.168.100.128/26, which does not exist",
		}},
		{"overlapping blocks hold an address twice", func(s *snapshot) {
			s.blocks = append(s.blocks, block(t, "192.168.100.0/28", "", map[int]string{1: "w9"}))
			s.handles = append(s.handles, handle("w9", "192.168.100.1"))
		}, nil}, // checked below: several messages
		{"block outside pools", func(s *snapshot) {
			s.blocks = append(s.blocks, block(t, "10.0.0.0/26", "", nil))
		}, []string{"block 10.0.0.0/26 lies outside every pool"}},
		{"undecodable block", func(s *snapshot) {
			s.blocks = append(s.blocks, parseBlockKV(datastore.BlockKey("192.168.100.128/26"), []byte("{"), 1))
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clean
			s.blocks = slices.Clone(clean.blocks)
			s.handles = slices.Clone(clean.handles)
			s.claims = slices.Clone(clean.claims)
			tt.edit(&s)
			r := checkSnapshot(s, nil)
			if r.OK() {
				t.Fatal("check found nothing")
			}
			if tt.want != nil && !slices.Equal(r.Problems, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(r.Problems, "\n"), strings.Join(tt.want, "\n"))
			}
			if tt.name == "overlapping blocks hold an address twice" {
				joined := strings.Join(r.Problems, "\n")
				for _, w := range []string{
					"192.168.100.1 is held twice: in block 192.168.100.0/26 (handle w1) and block 192.168.100.0/28 (handle w9)",
					"blocks 192.168.100.0/26 and 192.168.100.0/28 overlap",
				} {
					if !strings.Contains(joined, w) {
						t.Errorf("missing %q in:\n%s", w, joined)
					}
				}
			}
		})
	}
}

func TestPlanNodeRelease(t *testing.T) {
	blocks := []storedBlock{
		block(t, "192.168.100.0/26", "a", map[int]string{1: "w1"}), // in use: keep, lose affinity
		block(t, "192.168.100.64/26", "a", nil),                    // empty: delete
		block(t, "192.168.100.128/26", "b", nil),                   // someone else's
		block(t, "192.168.100.192/26", "a", nil),                   // affine but claim missing
	}
	claims := []claim{
		claimOf("a", "192.168.100.0/26"),
		claimOf("a", "192.168.100.64/26"),
		claimOf("a", "10.0.0.0/26"), // dangling
	}
	steps := planNodeRelease("a", blocks, claims)
	var got []string
	for _, s := range steps {
		d := ""
		if s.block != nil {
			d = s.block.st.prefix.String()
			if s.deleteBlock {
				d += " delete"
			} else {
				d += " unaffine"
			}
		}
		if s.claim != nil {
			d += " claim " + s.claim.cidr
		}
		got = append(got, strings.TrimSpace(d))
	}
	want := []string{
		"192.168.100.0/26 unaffine claim 192.168.100.0/26",
		"192.168.100.64/26 delete claim 192.168.100.64/26",
		"192.168.100.192/26 delete",
		"claim 10.0.0.0/26",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestCountInPrefix(t *testing.T) {
	blocks := []storedBlock{
		block(t, "192.168.100.0/26", "a", map[int]string{1: "w1", 40: "w2"}),
		block(t, "192.168.100.64/26", "a", map[int]string{0: "w3"}),
		block(t, "10.0.0.0/26", "a", map[int]string{0: "w4"}),
	}
	for _, tt := range []struct {
		p    string
		want int
	}{
		{"192.168.100.0/24", 3},
		{"192.168.100.0/26", 2},
		{"192.168.100.32/27", 1},
		{"10.0.0.0/8", 1},
		{"172.16.0.0/12", 0},
	} {
		if got := countInPrefix(blocks, netip.MustParsePrefix(tt.p)); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.p, got, tt.want)
		}
	}
}

func TestHandleRecords(t *testing.T) {
	h := handle("w", "10.0.0.1")
	got := h.withIP("w", netip.MustParseAddr("10.0.0.2"))
	if !slices.Equal(got.IPs, []string{"10.0.0.1", "10.0.0.2"}) {
		t.Errorf("withIP: %v", got.IPs)
	}
	if !slices.Equal(h.h.IPs, []string{"10.0.0.1"}) {
		t.Error("withIP changed the record it was given")
	}
	if got := (storedHandle{}).withIP("new", netip.MustParseAddr("10.0.0.3")); got.ID != "new" || !slices.Equal(got.IPs, []string{"10.0.0.3"}) {
		t.Errorf("new handle: %+v", got)
	}
	if got := h.withoutIPs(netip.MustParseAddr("10.0.0.1")); len(got.IPs) != 0 {
		t.Errorf("withoutIPs: %v", got.IPs)
	}
	c := parseClaimKV(datastore.AffinityKey("host-1", "fd00::40/122"), []byte("fd00::40/122"), 3)
	if c.node != "host-1" || c.cidr != "fd00::40/122" {
		t.Errorf("claim: %+v", c)
	}
}

func BenchmarkFirstFree(b *testing.B) {
	for _, n := range []int{64, 4096, 65536} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			// Worst case: everything but the last address taken.
			bm := newBitmap(n)
			for i := range n - 1 {
				bm.set(i)
			}
			b.ReportAllocs()
			for b.Loop() {
				if bm.firstFree(n, false, false) != n-1 {
					b.Fatal("wrong ordinal")
				}
			}
		})
	}
}

func BenchmarkDecodeAndPick(b *testing.B) {
	// What one AutoAssign costs in pure work: decode a half-full /26 and pick.
	allocs := map[int]string{}
	for i := range 32 {
		allocs[i] = fmt.Sprintf("workload-%d", i)
	}
	pool := mkPool(b, "192.168.0.0/16")
	rec := api.Block{CIDR: "192.168.3.0/26", Affinity: "host", Allocations: allocs}
	b.ReportAllocs()
	for b.Loop() {
		st, err := newBlockState(rec)
		if err != nil {
			b.Fatal(err)
		}
		if freeIn(pool, st) != 32 {
			b.Fatal("wrong ordinal")
		}
	}
}
