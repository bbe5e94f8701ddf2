package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

func setup(t testing.TB) (*clientv3.Client, *IPAM, context.Context) {
	t.Helper()
	cli := etcdtest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return cli, New(datastore.Adopt(cli)), ctx
}

func addPool(t testing.TB, cli *clientv3.Client, p api.Pool) {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), datastore.PoolKey(p.CIDR), string(b)); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", msg)
	}
	if err.Error() != msg || !errors.Is(err, kind) {
		t.Fatalf("error %q (%T), want %q (kind %v)", err, err, msg, kind)
	}
}

func mustCheck(t *testing.T, m *IPAM, ctx context.Context, live map[string]bool) {
	t.Helper()
	r, err := m.Check(ctx, live)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() {
		t.Fatalf("check: leaked %v, problems:\n%s", r.Leaked, strings.Join(r.Problems, "\n"))
	}
}

var a = netip.MustParseAddr

func TestAssignSpecific(t *testing.T) {
	cli, m, ctx := setup(t)

	wantErr(t, m.Assign(ctx, a("192.168.100.1"), "w1", "host1"), ErrNoPools,
		"no pools configured; add one with calicoctl pool add CIDR")
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})

	if err := m.Assign(ctx, a("192.168.100.1"), "w1", "host1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.Assign(ctx, a("192.168.100.1"), "w2", "host2"), ErrAlreadyAssigned,
		"192.168.100.1 is already assigned (to w1)")
	wantErr(t, m.Assign(ctx, a("192.168.5.1"), "w2", "host1"), ErrNotInPool,
		"192.168.5.1 is not in any pool; pools: 192.168.100.0/24")

	// The block was created and claimed by host1.
	blocks, err := m.BlocksOf(ctx, "host1")
	if err != nil || !slices.Equal(blocks, []string{"192.168.100.0/26"}) {
		t.Fatalf("BlocksOf(host1) = %v, %v", blocks, err)
	}
	info, err := m.Info(ctx, a("192.168.100.1"))
	if err != nil {
		t.Fatal(err)
	}
	want := IPInfo{IP: "192.168.100.1", Pool: "192.168.100.0/24", Block: "192.168.100.0/26", Affinity: "host1", Handle: "w1", Assigned: true}
	if info != want {
		t.Errorf("Info = %+v, want %+v", info, want)
	}

	// A second address of the same handle, in a block another host claims
	// by assigning into it first.
	if err := m.Assign(ctx, a("192.168.100.200"), "w2", "host2"); err != nil {
		t.Fatal(err)
	}
	if err := m.Assign(ctx, a("192.168.100.2"), "w2", "host2"); err != nil {
		t.Fatal(err) // host1's block: allowed, the address is free
	}
	bi, err := m.Blocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantBlocks := []BlockInfo{
		{CIDR: "192.168.100.0/26", Affinity: "host1", Used: 2, Size: 64},
		{CIDR: "192.168.100.192/26", Affinity: "host2", Used: 1, Size: 64},
	}
	if !slices.Equal(bi, wantBlocks) {
		t.Errorf("Blocks = %+v, want %+v", bi, wantBlocks)
	}
	if n, err := m.InUse(ctx, "192.168.100.0/24"); err != nil || n != 3 {
		t.Errorf("InUse = %d, %v", n, err)
	}
	mustCheck(t, m, ctx, map[string]bool{"w1": true, "w2": true})

	// Release.
	h, err := m.Release(ctx, a("192.168.100.1"))
	if err != nil || h != "w1" {
		t.Fatalf("Release = %q, %v", h, err)
	}
	_, err = m.Release(ctx, a("192.168.100.1"))
	wantErr(t, err, ErrNotAssigned, "192.168.100.1 is not assigned")
	_, err = m.Release(ctx, a("192.168.100.7"))
	wantErr(t, err, ErrNotAssigned, "192.168.100.7 is not assigned")
	_, err = m.Release(ctx, a("192.168.100.100")) // no block there at all
	wantErr(t, err, ErrNotAssigned, "192.168.100.100 is not assigned")
	if r, _ := cli.Get(ctx, datastore.HandleKey("w1")); len(r.Kvs) != 0 {
		t.Error("handle w1 survived the release of its only address")
	}
	info, _ = m.Info(ctx, a("192.168.100.1"))
	if info.Assigned || info.Handle != "" || info.Block != "192.168.100.0/26" {
		t.Errorf("released address: %+v", info)
	}
	// The address can be taken again.
	if err := m.Assign(ctx, a("192.168.100.1"), "w3", "host1"); err != nil {
		t.Fatal(err)
	}

	// Handle release frees every address of the handle at once.
	ips, err := m.ReleaseHandle(ctx, "w2")
	if err != nil || !slices.Equal(ips, []netip.Addr{a("192.168.100.2"), a("192.168.100.200")}) {
		t.Fatalf("ReleaseHandle = %v, %v", ips, err)
	}
	if ips, err := m.ReleaseHandle(ctx, "w2"); err != nil || len(ips) != 0 {
		t.Errorf("second ReleaseHandle = %v, %v", ips, err)
	}
	mustCheck(t, m, ctx, map[string]bool{"w3": true})

	// Bad arguments.
	for _, err := range []error{
		m.Assign(ctx, netip.Addr{}, "w", "h"),
		m.Assign(ctx, a("192.168.100.9"), "", "h"),
		m.Assign(ctx, a("192.168.100.9"), "w", ""),
		m.Assign(ctx, a("192.168.100.9"), "a/b", "h"),
	} {
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("bad argument: %v", err)
		}
	}
	// An IPv4-mapped IPv6 address is the IPv4 address.
	if err := m.Assign(ctx, a("::ffff:192.168.100.9"), "w4", "host1"); err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Info(ctx, a("192.168.100.9")); info.Handle != "w4" {
		t.Errorf("mapped address: %+v", info)
	}
}

func TestAutoAssign(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})

	seen := map[netip.Addr]bool{}
	var first netip.Prefix
	for i := range 3 {
		ip, err := m.AutoAssign(ctx, fmt.Sprintf("h1-%d", i), "host1", 4, nil)
		if err != nil {
			t.Fatal(err)
		}
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
		bp := netip.PrefixFrom(ip, 26).Masked()
		if i == 0 {
			first = bp
		} else if bp != first {
			t.Errorf("%s is not in host1's first block %s", ip, first)
		}
	}
	if b, _ := m.BlocksOf(ctx, "host1"); !slices.Equal(b, []string{first.String()}) {
		t.Errorf("BlocksOf(host1) = %v, want [%s]", b, first)
	}

	// A second host gets a block of its own.
	ip2, err := m.AutoAssign(ctx, "h2", "host2", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := m.BlocksOf(ctx, "host2")
	if len(b2) != 1 || b2[0] == first.String() || !netip.MustParsePrefix(b2[0]).Contains(ip2) {
		t.Errorf("host2: %s in blocks %v (host1 has %s)", ip2, b2, first)
	}

	// One handle may hold several addresses.
	ip3, err := m.AutoAssign(ctx, "h2", "host2", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	ips, err := m.ReleaseHandle(ctx, "h2")
	if err != nil || len(ips) != 2 || !slices.Contains(ips, ip2) || !slices.Contains(ips, ip3) {
		t.Errorf("ReleaseHandle(h2) = %v, %v", ips, err)
	}

	// Restricting to a pool, and disabled pools.
	addPool(t, cli, api.Pool{CIDR: "10.10.0.0/24"})
	addPool(t, cli, api.Pool{CIDR: "10.20.0.0/24", Disabled: true})
	ip, err := m.AutoAssign(ctx, "h4", "host1", 4, []string{"10.10.0.0/24"})
	if err != nil || !netip.MustParsePrefix("10.10.0.0/24").Contains(ip) {
		t.Errorf("restricted: %s, %v", ip, err)
	}
	_, err = m.AutoAssign(ctx, "h5", "host1", 4, []string{"10.20.0.0/24"})
	wantErr(t, err, ErrNoPools, "pool 10.20.0.0/24 is disabled")
	_, err = m.AutoAssign(ctx, "h5", "host1", 6, nil)
	wantErr(t, err, ErrNoPools, "no enabled IPv6 pools; add one with calicoctl pool add CIDR")
	_, err = m.AutoAssign(ctx, "h5", "host1", 5, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("family 5: %v", err)
	}
	// A disabled pool still takes explicit assignments.
	if err := m.Assign(ctx, a("10.20.0.5"), "h6", "host1"); err != nil {
		t.Error(err)
	}
	mustCheck(t, m, ctx, nil)
}

// TestBorrow fills a pool of one block from two hosts: the first claims the
// block, the second must borrow from it, and then the pool is full.
func TestBorrow(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "192.168.50.0/26"})

	ip1, err := m.AutoAssign(ctx, "a0", "hostA", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ip1 != a("192.168.50.1") {
		t.Errorf("first address %s: the pool's network address must be skipped", ip1)
	}
	ip2, err := m.AutoAssign(ctx, "b0", "hostB", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := m.Info(ctx, ip2)
	if info.Affinity != "hostA" || info.Handle != "b0" {
		t.Errorf("borrowed address: %+v", info)
	}
	if b, _ := m.BlocksOf(ctx, "hostB"); len(b) != 0 {
		t.Errorf("hostB claimed %v: there is no free block to claim", b)
	}

	// 62 usable addresses: .0 and .63 are network and broadcast.
	got := map[netip.Addr]bool{ip1: true, ip2: true}
	for i := 0; len(got) < 62; i++ {
		node := []string{"hostA", "hostB"}[i%2]
		ip, err := m.AutoAssign(ctx, fmt.Sprintf("x%d", i), node, 4, nil)
		if err != nil {
			t.Fatalf("after %d addresses: %v", len(got), err)
		}
		if got[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		got[ip] = true
	}
	_, err = m.AutoAssign(ctx, "full", "hostB", 4, nil)
	wantErr(t, err, ErrExhausted, "no free addresses in pools 192.168.50.0/26")
	if got[a("192.168.50.0")] || got[a("192.168.50.63")] {
		t.Error("network or broadcast address auto-assigned")
	}
	// ...but asking for it explicitly works.
	if err := m.Assign(ctx, a("192.168.50.63"), "explicit", "hostB"); err != nil {
		t.Error(err)
	}
	mustCheck(t, m, ctx, nil)
}

func TestIPv6(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "fd00:1::/64"})
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})

	ip, err := m.AutoAssign(ctx, "w1", "host1", 6, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !ip.Is6() || !netip.MustParsePrefix("fd00:1::/64").Contains(ip) {
		t.Fatalf("got %s", ip)
	}
	blocks, _ := m.BlocksOf(ctx, "host1")
	if len(blocks) != 1 || !strings.HasSuffix(blocks[0], "/122") || !netip.MustParsePrefix(blocks[0]).Contains(ip) {
		t.Errorf("blocks %v for %s", blocks, ip)
	}
	// The same handle takes an IPv4 address too (dual stack).
	ip4, err := m.AutoAssign(ctx, "w1", "host1", 4, nil)
	if err != nil || !ip4.Is4() {
		t.Fatalf("v4: %s %v", ip4, err)
	}
	// Specific IPv6 assignment, duplicates and release.
	if err := m.Assign(ctx, a("fd00:1::abcd"), "w2", "host2"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.Assign(ctx, a("fd00:1::abcd"), "w3", "host2"), ErrAlreadyAssigned, "fd00:1::abcd is already assigned (to w2)")
	wantErr(t, m.Assign(ctx, a("fd00:2::1"), "w3", "host2"), ErrNotInPool, "fd00:2::1 is not in any pool; pools: 192.168.100.0/24, fd00:1::/64")
	info, _ := m.Info(ctx, a("fd00:1::abcd"))
	if want := netip.PrefixFrom(a("fd00:1::abcd"), 122).Masked().String(); info.Block != want || info.Affinity != "host2" {
		t.Errorf("Info = %+v, want block %s", info, want)
	}
	ips, err := m.ReleaseHandle(ctx, "w1")
	if err != nil || len(ips) != 2 {
		t.Errorf("ReleaseHandle = %v, %v", ips, err)
	}
	mustCheck(t, m, ctx, map[string]bool{"w2": true})
	// Fill a small IPv6 pool (no broadcast: all 8 usable).
	addPool(t, cli, api.Pool{CIDR: "fd00:9::/125"})
	for i := range 8 {
		if _, err := m.AutoAssign(ctx, fmt.Sprintf("s%d", i), "host3", 6, []string{"fd00:9::/125"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = m.AutoAssign(ctx, "s9", "host3", 6, []string{"fd00:9::/125"})
	wantErr(t, err, ErrExhausted, "no free addresses in pools fd00:9::/125")
}

func TestReleaseNodeBlocks(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})
	// hostA: one block in use, one emptied.
	if err := m.Assign(ctx, a("192.168.100.1"), "keep", "hostA"); err != nil {
		t.Fatal(err)
	}
	if err := m.Assign(ctx, a("192.168.100.70"), "gone", "hostA"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReleaseHandle(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := m.Assign(ctx, a("192.168.100.130"), "other", "hostB"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseNodeBlocks(ctx, "hostA"); err != nil {
		t.Fatal(err)
	}
	if b, _ := m.BlocksOf(ctx, "hostA"); len(b) != 0 {
		t.Errorf("hostA still claims %v", b)
	}
	bi, _ := m.Blocks(ctx)
	want := []BlockInfo{
		{CIDR: "192.168.100.0/26", Affinity: "", Used: 1, Size: 64},
		{CIDR: "192.168.100.128/26", Affinity: "hostB", Used: 1, Size: 64},
	}
	if !slices.Equal(bi, want) {
		t.Errorf("Blocks = %+v, want %+v", bi, want)
	}
	mustCheck(t, m, ctx, map[string]bool{"keep": true, "other": true})

	// Let hostZ claim the pool's two remaining blocks, so no block is left
	// to create: a new host must then adopt the block without affinity
	// rather than borrow from hostB's or hostZ's.
	for i := range 2 {
		if _, err := cli.Put(ctx, datastore.BlockKey(fmt.Sprintf("192.168.100.%d/26", 64+i*128)),
			fmt.Sprintf(`{"cidr":"192.168.100.%d/26","affinity":"hostZ","allocations":{}}`, 64+i*128)); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, datastore.AffinityKey("hostZ", fmt.Sprintf("192.168.100.%d/26", 64+i*128)), fmt.Sprintf("192.168.100.%d/26", 64+i*128)); err != nil {
			t.Fatal(err)
		}
	}
	ip, err := m.AutoAssign(ctx, "c", "hostC", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := m.Info(ctx, ip); info.Block != "192.168.100.0/26" || info.Affinity != "hostC" {
		t.Errorf("adoption: %s %+v", ip, info)
	}
	if b, _ := m.BlocksOf(ctx, "hostC"); !slices.Equal(b, []string{"192.168.100.0/26"}) {
		t.Errorf("hostC claims %v", b)
	}
	mustCheck(t, m, ctx, nil)
}

func TestCheckFindsLeak(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})
	ip1, err := m.AutoAssign(ctx, "live", "host1", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	ip2, err := m.AutoAssign(ctx, "dead", "host1", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ip1
	r, err := m.Check(ctx, map[string]bool{"live": true})
	if err != nil {
		t.Fatal(err)
	}
	want := []LeakedIP{{IP: ip2.String(), Handle: "dead", Block: netip.PrefixFrom(ip2, 26).Masked().String()}}
	if !slices.Equal(r.Leaked, want) || len(r.Problems) != 0 || r.OK() {
		t.Errorf("Check = %+v, want leaked %+v", r, want)
	}

	// Damage the datastore by hand: a block whose claim is missing, and a
	// handle that lost its record of an address.
	blocks, _ := m.BlocksOf(ctx, "host1")
	if _, err := cli.Delete(ctx, datastore.AffinityKey("host1", blocks[0])); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, datastore.HandleKey("live"), `{"id":"live","ips":[]}`); err != nil {
		t.Fatal(err)
	}
	r, _ = m.Check(ctx, nil)
	joined := strings.Join(r.Problems, "\n")
	for _, w := range []string{
		fmt.Sprintf("block %s is affine to host1, but host1's claim on it is missing", blocks[0]),
		fmt.Sprintf("%s in block %s is allocated to handle live, but the handle does not record it", ip1, blocks[0]),
	} {
		if !strings.Contains(joined, w) {
			t.Errorf("missing %q in:\n%s", w, joined)
		}
	}
}
