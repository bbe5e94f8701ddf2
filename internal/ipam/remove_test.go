package ipam

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// keysUnder lists the keys stored under prefix.
func keysUnder(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	r, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// TestReleaseFreesEmptyBlock: releasing the last address of a block deletes
// the block and its node's claim, by address and by handle, so nothing is
// left claimed for addresses nobody holds (a failed `container add` undoes
// its assignment this way).
func TestReleaseFreesEmptyBlock(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.60.0.0/24"})
	ip, err := m.AutoAssign(ctx, "w1", "hostA", 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Assign(ctx, ip.Next(), "w2", "hostA"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Release(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if got := keysUnder(t, cli, datastore.PrefixBlocks); len(got) != 1 {
		t.Fatalf("a block still holding w2's address must stay: %v", got)
	}
	if _, err := m.ReleaseHandle(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{datastore.PrefixBlocks, datastore.PrefixAffinities, datastore.PrefixHandles} {
		if got := keysUnder(t, cli, p); len(got) != 0 {
			t.Errorf("left behind after releasing everything: %v", got)
		}
	}
	mustCheck(t, m, ctx, map[string]bool{})

	// By address too, for a block of a node that was removed (no claim).
	if err := m.Assign(ctx, ip, "w3", "hostB"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReleaseNodeBlocks(ctx, "hostB"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Release(ctx, ip); err != nil {
		t.Fatal(err)
	}
	if got := keysUnder(t, cli, datastore.PrefixIPAM); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
}

// TestRemovePool: refused while in use (nothing written), removes its
// empty blocks and claims (and only its own), and with force keeps the
// blocks still holding addresses.
func TestRemovePool(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.61.0.0/24"})
	addPool(t, cli, api.Pool{CIDR: "10.62.0.0/24"})
	keep, err := m.AutoAssign(ctx, "other", "hostA", 4, []string{"10.62.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := m.AutoAssign(ctx, fmt.Sprintf("w%d", i), fmt.Sprintf("host%d", i), 4, []string{"10.61.0.0/24"}); err != nil {
			t.Fatal(err)
		}
	}
	// A stale claim on a block of the pool that does not exist.
	used := map[string]bool{}
	bs, _ := m.Blocks(ctx)
	for _, b := range bs {
		used[b.CIDR] = true
	}
	stale := ""
	for _, c := range []string{"10.61.0.0/26", "10.61.0.64/26", "10.61.0.128/26", "10.61.0.192/26"} {
		if !used[c] {
			stale = c
		}
	}
	if _, err := cli.Put(ctx, datastore.AffinityKey("hostZ", stale), stale); err != nil {
		t.Fatal(err)
	}
	before := keysUnder(t, cli, datastore.Root)
	n, err := m.RemovePool(ctx, datastore.PoolKey("10.61.0.0/24"), false)
	wantErrKind(t, err, ErrInUse, "pool 10.61.0.0/24 has 3 address(es) in use; remove those workloads first, or use --force")
	if n != 3 {
		t.Errorf("in use %d, want 3", n)
	}
	if after := keysUnder(t, cli, datastore.Root); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("refused remove changed the datastore:\n%v\n%v", before, after)
	}

	// Empty two of the three blocks; force leaves the third with its address.
	for i := range 2 {
		if _, err := m.ReleaseHandle(ctx, fmt.Sprintf("w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.RemovePool(ctx, datastore.PoolKey("10.61.0.0/24"), false); !errors.Is(err, ErrInUse) {
		t.Fatalf("remove with one address in use: %v", err)
	}
	if _, err := m.RemovePool(ctx, datastore.PoolKey("10.61.0.0/24"), true); err != nil {
		t.Fatal(err)
	}
	blocks, _ := m.Blocks(ctx)
	var in61, in62 int
	for _, b := range blocks {
		switch {
		case b.CIDR[:8] == "10.61.0.":
			in61++
			if b.Used != 1 {
				t.Errorf("kept block %s has %d addresses, want 1", b.CIDR, b.Used)
			}
		case b.CIDR[:8] == "10.62.0.":
			in62++
		}
	}
	if in61 != 1 || in62 != 1 {
		t.Errorf("blocks after forced remove: %+v; want w2's block and the other pool's", blocks)
	}
	if got := keysUnder(t, cli, datastore.AffinityPrefix("hostZ")); len(got) != 0 {
		t.Errorf("stale claim left: %v", got)
	}
	if _, err := m.Info(ctx, keep); err != nil {
		t.Errorf("the other pool's address: %v", err)
	}
	if _, err := m.RemovePool(ctx, datastore.PoolKey("10.61.0.0/24"), false); !errors.Is(err, ErrNoPools) {
		t.Errorf("removing a removed pool: %v", err)
	}
}

// TestRemovePoolRacesAssign: a pool removal and an assignment in it race
// many times; they must never both succeed (an address assigned in a pool
// that no longer exists).
func TestRemovePoolRacesAssign(t *testing.T) {
	cli, m, ctx := setup(t)
	m2 := New(datastore.Adopt(cli))
	const rounds = 40
	both, removed, assigned := 0, 0, 0
	for i := range rounds {
		cidr := fmt.Sprintf("10.%d.0.0/24", 100+i)
		addPool(t, cli, api.Pool{CIDR: cidr})
		var wg sync.WaitGroup
		var rerr, aerr error
		wg.Go(func() { _, rerr = m.RemovePool(ctx, datastore.PoolKey(cidr), false) })
		wg.Go(func() { _, aerr = m2.AutoAssign(ctx, fmt.Sprintf("h%d", i), "hostR", 4, nil) })
		wg.Wait()
		switch {
		case rerr == nil && aerr == nil:
			both++
		case rerr == nil:
			removed++
		case aerr == nil:
			assigned++
			if !errors.Is(rerr, ErrInUse) {
				t.Errorf("round %d: remove failed with %v", i, rerr)
			}
			if _, err := m.ReleaseHandle(ctx, fmt.Sprintf("h%d", i)); err != nil {
				t.Fatal(err)
			}
			if _, err := m.RemovePool(ctx, datastore.PoolKey(cidr), false); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("round %d: both failed: %v; %v", i, rerr, aerr)
		}
	}
	t.Logf("FIGURE: pool remove vs assign, %d rounds: remove won %d, assign won %d, both %d", rounds, removed, assigned, both)
	if both > 0 {
		t.Errorf("%d rounds assigned an address in a pool that was removed", both)
	}
	mustCheck(t, m, ctx, map[string]bool{})
	if got := keysUnder(t, cli, datastore.PrefixIPAM); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
}

func wantErrKind(t *testing.T, err error, kind error, msg string) {
	t.Helper()
	if err == nil || err.Error() != msg || !errors.Is(err, kind) {
		t.Fatalf("error %v, want %q (kind %v)", err, msg, kind)
	}
}
