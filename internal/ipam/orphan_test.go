package ipam

import (
	"errors"
	"net/netip"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// The sweeper's release happens only while the handle has no owner and has
// not changed since it was judged an orphan, decided in one transaction.
func TestReleaseOrphanHandle(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "10.9.0.0/24", BlockSize: 26})
	handle, owner := "h1~w1", datastore.EndpointKey("h1", "w1")
	a := netip.MustParseAddr("10.9.0.5")
	if err := m.Assign(ctx, a, handle, "h1"); err != nil {
		t.Fatal(err)
	}
	rev := func() int64 {
		resp, err := cli.Get(ctx, datastore.HandleKey(handle))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("handle: %v %v", resp, err)
		}
		return resp.Kvs[0].ModRevision
	}
	seen := rev()

	// An owner appeared: nothing is released.
	if _, err := cli.Put(ctx, owner, "{}"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReleaseOrphanHandle(ctx, handle, owner, seen); !errors.Is(err, ErrNotOrphan) {
		t.Fatalf("with an owner: %v, want ErrNotOrphan", err)
	}
	if _, err := cli.Delete(ctx, owner); err != nil {
		t.Fatal(err)
	}
	// The handle changed since it was seen (a rerun took another address).
	if err := m.Assign(ctx, netip.MustParseAddr("10.9.0.6"), handle, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReleaseOrphanHandle(ctx, handle, owner, seen); !errors.Is(err, ErrNotOrphan) {
		t.Fatalf("after the handle changed: %v, want ErrNotOrphan", err)
	}
	if info, _ := m.Info(ctx, a); !info.Assigned {
		t.Fatal("a refused release freed the address")
	}
	// Unchanged and unowned: released, handle and all.
	ips, err := m.ReleaseOrphanHandle(ctx, handle, owner, rev())
	if err != nil || len(ips) != 2 {
		t.Fatalf("ReleaseOrphanHandle = %v, %v", ips, err)
	}
	resp, err := cli.Get(ctx, datastore.PrefixIPAM, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("left in IPAM: %d keys (%v)", resp.Count, err)
	}
	// A handle that is gone is no error.
	if _, err := m.ReleaseOrphanHandle(ctx, handle, owner, 1); err != nil {
		t.Fatalf("gone handle: %v", err)
	}
}
