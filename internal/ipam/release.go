// Giving addresses back: one address (Release, ReleaseFrom) or all of a
// handle's (ReleaseHandle); a block left empty goes with its claim.

package ipam

import (
	"context"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Release frees ip whoever holds it, and returns the handle that held it.
// It is the administrator's repair (`calicoctl ipam release`): code that
// gives back its own address uses ReleaseFrom, which cannot free another
// holder's.
func (m *IPAM) Release(ctx context.Context, ip netip.Addr) (string, error) {
	return m.release(ctx, ip, "")
}

// ReleaseFrom frees ip only while handle holds it. An address held by
// another handle is left assigned and the error (ErrNotHolder) names the
// holder: a stale endpoint record, a late retry, or a forged request must
// not free an address that has since gone to another workload, which would
// then be handed out twice. An address nobody holds is ErrNotAssigned.
func (m *IPAM) ReleaseFrom(ctx context.Context, ip netip.Addr, handle string) error {
	if err := checkName("handle", handle); err != nil {
		return err
	}
	_, err := m.release(ctx, ip, handle)
	return err
}

// release frees ip, only from handle when it is not "".
func (m *IPAM) release(ctx context.Context, ip netip.Addr, handle string) (string, error) {
	ip, err := checkAddr(ip)
	if err != nil {
		return "", err
	}
	var owner string
	err = m.retry(ctx, func() (bool, error) {
		sb, err := m.blockOf(ctx, ip)
		if err != nil {
			return false, err
		}
		if sb == nil {
			return false, errorf(ErrNotAssigned, "%s is not assigned", ip)
		}
		ord, _ := sb.st.ordinal(ip)
		var taken bool
		owner, taken = sb.st.owner(ord)
		if !taken {
			return false, errorf(ErrNotAssigned, "%s is not assigned", ip)
		}
		if handle != "" && owner != handle {
			return false, errorf(ErrNotHolder, "%s is held by %s, not by %s; left assigned", ip, owner, handle)
		}
		hkey := datastore.HandleKey(owner)
		r, err := m.read(ctx, datastore.ReadKey(hkey))
		if err != nil {
			return false, err
		}
		// The block's revision guards the owner we checked: if the address
		// changed hands since the read, the write fails and we look again.
		cmps := []datastore.Guard{datastore.Unchanged(sb.key, sb.rev)}
		ops := blockOps(*sb, sb.st.without(ord))
		// A missing or unreadable handle record must not keep the address
		// stuck; the block is what decides whether it is free.
		if h, err := handleFrom(hkey, r[0]); err == nil {
			cmps = append(cmps, datastore.Unchanged(hkey, h.rev))
			if h.rev != 0 {
				ops = append(ops, handleOp(hkey, h.withoutIPs(ip)))
			}
		}
		m.released()
		ok, err := m.commit(ctx, cmps, ops)
		m.released()
		return ok, err
	})
	if err != nil {
		return "", err
	}
	return owner, nil
}

// blockOps writes a block's new record after a release. A block left empty
// is deleted together with its node's claim, in the same transaction: an
// empty block would otherwise stay claimed for ever (a failed `container
// add` or the last workload of a block leaving would leak it), keep a
// blackhole route and a BGP announcement for addresses nobody uses, and keep
// the pool from being removed cleanly. A host that needs addresses again
// claims a block anew, which costs one transaction.
func blockOps(sb storedBlock, rec api.Block) []datastore.Write {
	if len(rec.Allocations) > 0 {
		return []datastore.Write{datastore.WriteJSON(sb.key, rec)}
	}
	ops := []datastore.Write{datastore.WriteDelete(sb.key)}
	if rec.Affinity != "" {
		ops = append(ops, datastore.WriteDelete(datastore.AffinityKey(rec.Affinity, sb.st.prefix.String())))
	}
	return ops
}

// ReleaseHandle frees every address recorded for handle and deletes the
// handle, in one transaction, and returns the addresses freed. An unknown
// handle frees nothing and is not an error, so cleanup after a failed
// `container add` can always call it.
func (m *IPAM) ReleaseHandle(ctx context.Context, handle string) ([]netip.Addr, error) {
	return m.releaseHandle(ctx, handle, nil)
}

// releaseHandle is ReleaseHandle, with the conditions of guard (orphan.go)
// when it is not nil.
func (m *IPAM) releaseHandle(ctx context.Context, handle string, guard *orphanGuard) ([]netip.Addr, error) {
	if err := checkName("handle", handle); err != nil {
		return nil, err
	}
	hkey := datastore.HandleKey(handle)
	var released []netip.Addr
	err := m.retry(ctx, func() (bool, error) {
		released = nil
		r, err := m.read(ctx, append([]datastore.Read{datastore.ReadKey(hkey)}, guard.reads()...)...)
		if err != nil {
			return false, err
		}
		if len(r[0]) == 0 {
			return true, nil
		}
		h, err := handleFrom(hkey, r[0])
		if err != nil {
			return false, err
		}
		if err := guard.check(h, r[1:]); err != nil {
			return false, err
		}
		type change struct {
			sb   storedBlock
			ords []int
		}
		var changes []*change
		byKey := map[string]*change{}
		for _, txt := range h.h.IPs {
			a, err := netip.ParseAddr(txt)
			if err != nil {
				continue // unparseable: dropped with the handle
			}
			sb, err := m.blockOf(ctx, a)
			if err != nil {
				return false, err
			}
			if sb == nil {
				continue
			}
			c := byKey[sb.key]
			if c == nil {
				c = &change{sb: *sb}
				byKey[sb.key] = c
				changes = append(changes, c)
			}
			// Only free what the block agrees belongs to this handle: the
			// record may be stale, the block is authoritative.
			ord, _ := c.sb.st.ordinal(a)
			if owner, ok := c.sb.st.owner(ord); ok && owner == handle && !slices.Contains(c.ords, ord) {
				c.ords = append(c.ords, ord)
				released = append(released, a)
			}
		}
		cmps := append([]datastore.Guard{datastore.Unchanged(hkey, h.rev)}, guard.cmps()...)
		ops := []datastore.Write{datastore.WriteDelete(hkey)}
		for _, c := range changes {
			if len(c.ords) == 0 {
				continue
			}
			cmps = append(cmps, datastore.Unchanged(c.sb.key, c.sb.rev))
			ops = append(ops, blockOps(c.sb, c.sb.st.without(c.ords...))...)
		}
		m.released()
		ok, err := m.commit(ctx, cmps, ops)
		m.released()
		return ok, err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(released, netip.Addr.Compare)
	return released, nil
}
