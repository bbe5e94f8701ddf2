package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/calico-go/calico/internal/datastore"
)

// ErrNotOrphan: the handle got an owner, or changed, since it was judged
// an orphan; nothing was released.
var ErrNotOrphan = errors.New("handle is not an orphan any more")

// ReleaseOrphanHandle is ReleaseHandle for a handle nobody owns, as the
// agent's sweeper judged it: it releases only if, in the same transaction,
// ownerKey (the endpoint record that would own the handle) does not exist
// and the handle is still at revision rev, as it was when first seen
// unowned. A workload being added meanwhile either wrote its record first
// (and this fails with ErrNotOrphan) or finds its addresses gone after its
// record exists (and takes them again).
func (m *IPAM) ReleaseOrphanHandle(ctx context.Context, handle, ownerKey string, rev int64) ([]netip.Addr, error) {
	return m.releaseHandle(ctx, handle, &orphanGuard{ownerKey: ownerKey, rev: rev})
}

// orphanGuard adds ReleaseOrphanHandle's conditions to releaseHandle; a nil
// guard adds none.
type orphanGuard struct {
	ownerKey string
	rev      int64
}

func (g *orphanGuard) reads() []datastore.Read {
	if g == nil {
		return nil
	}
	return []datastore.Read{datastore.ReadKey(g.ownerKey)}
}

func (g *orphanGuard) check(h storedHandle, read [][]kv) error {
	switch {
	case g == nil:
		return nil
	case len(read) > 0 && len(read[0]) > 0:
		return fmt.Errorf("%w: %s exists", ErrNotOrphan, g.ownerKey)
	case h.rev != g.rev:
		return fmt.Errorf("%w: it changed since it was seen unowned", ErrNotOrphan)
	}
	return nil
}

func (g *orphanGuard) cmps() []datastore.Guard {
	if g == nil {
		return nil
	}
	return []datastore.Guard{datastore.Unchanged(g.ownerKey, 0)}
}
