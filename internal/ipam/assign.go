// Taking addresses: a given one (Assign) or any free one (AutoAssign, whose
// strategies are in autoassign.go), and the two transactions that do it.

package ipam

import (
	"context"
	"net/netip"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Assign takes the specific address ip for handle on node. The address must
// lie in a pool (disabled pools included: they only stop automatic
// assignment) and be free. If its block does not exist yet it is created
// with affinity to node.
func (m *IPAM) Assign(ctx context.Context, ip netip.Addr, handle, node string) error {
	ip, err := checkAddr(ip)
	if err != nil {
		return err
	}
	if err := checkNames(handle, node); err != nil {
		return err
	}
	// Assignments on one node mostly hit the same block record: taking
	// them one at a time here saves each a round of failed compare-and-
	// swaps (653 retries for 200 adds in bursts of 20, measured by bench).
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		return err
	}
	defer unlock()
	hkey := datastore.HandleKey(handle)
	return m.retry(ctx, func() (bool, error) {
		// The address's block, as the pools last read lay it out, in the
		// same read as the pools and the handle: one round trip fewer
		// under the node's lock, where a burst of adds queues.
		reads := []datastore.Read{datastore.ReadPrefix(datastore.PrefixPools), datastore.ReadKey(hkey)}
		guess := m.guessBlock(ip)
		if guess.IsValid() {
			reads = append(reads, datastore.ReadKey(datastore.BlockKey(guess.String())))
		}
		r, err := m.read(ctx, reads...)
		if err != nil {
			return false, err
		}
		pools := parsePools(r[0])
		m.notePools(pools)
		pool, err := poolForAddr(pools, ip)
		if err != nil {
			return false, err
		}
		h, err := handleFrom(hkey, r[1])
		if err != nil {
			return false, err
		}
		bp := pool.blockFor(ip)
		var sb *storedBlock
		var clash netip.Prefix
		if bp == guess && len(r[2]) > 0 {
			sb, err = m.blockHolding(r[2][0], ip)
		} else {
			// No block there yet (or the pools changed): look for one
			// that overlaps before creating it.
			sb, clash, err = m.locateBlock(ctx, ip, bp)
		}
		if err != nil {
			return false, err
		}
		if sb != nil {
			ord, _ := sb.st.ordinal(ip)
			if owner, taken := sb.st.owner(ord); taken {
				return false, errorf(ErrAlreadyAssigned, "%s is already assigned (to %s)", ip, owner)
			}
			_, ok, err := m.allocate(ctx, pool, *sb, ord, handle, h, "")
			return ok, err
		}
		if clash.IsValid() {
			return false, errorf(ErrCorrupt, "cannot create block %s for %s: it would overlap block %s (see calicoctl ipam check)", bp, ip, clash)
		}
		st, err := newBlockState(api.Block{CIDR: bp.String(), Affinity: node})
		if err != nil {
			return false, err
		}
		ord, _ := st.ordinal(ip)
		_, ok, err := m.claimAndAllocate(ctx, pool, st, ord, node, handle, h)
		return ok, err
	})
}

// AutoAssign picks a free address of the given family (4 or 6) for handle on
// node: first from the node's own blocks, then from a newly claimed block
// (of an enabled pool of that family, only the named pools when pools is not
// empty), then from a block no node owns (claiming it), and last, when every
// block is claimed, borrowed from another node's block.
func (m *IPAM) AutoAssign(ctx context.Context, handle, node string, family int, pools []string) (netip.Addr, error) {
	if err := checkNames(handle, node); err != nil {
		return netip.Addr{}, err
	}
	if family != 4 && family != 6 {
		return netip.Addr{}, errorf(ErrInvalid, "address family must be 4 or 6, not %d", family)
	}
	var restrict []netip.Prefix
	for _, s := range pools {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return netip.Addr{}, errorf(ErrInvalid, "bad pool CIDR %q: %v", s, err)
		}
		restrict = append(restrict, p.Masked())
	}
	unlock, err := m.lockNode(ctx, node)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unlock()
	var got netip.Addr
	err = m.retry(ctx, func() (bool, error) {
		var done bool
		var err error
		got, done, err = m.tryAutoAssign(ctx, handle, node, family, restrict)
		return done, err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	return got, nil
}

// freeIn returns the lowest free ordinal of a block for automatic
// assignment, or -1.
func freeIn(pool poolInfo, st *blockState) int {
	first, last := pool.reservedIn(st.prefix)
	return st.used.firstFree(st.size, first, last)
}

// allocate writes ordinal ord of an existing block to handle, guarded by the
// block, handle and pool revisions read. adopt names a node taking over a
// block without affinity.
func (m *IPAM) allocate(ctx context.Context, pool poolInfo, sb storedBlock, ord int, handle string, h storedHandle, adopt string) (netip.Addr, bool, error) {
	ip := sb.st.addr(ord)
	rec := sb.st.with(ord, handle)
	cmps := []datastore.Guard{datastore.Unchanged(sb.key, sb.rev), datastore.Unchanged(h.key, h.rev), datastore.Unchanged(pool.key, pool.rev)}
	var ops []datastore.Write
	if adopt != "" {
		rec.Affinity = adopt
		ops = append(ops, datastore.WriteValue(datastore.AffinityKey(adopt, rec.CIDR), rec.CIDR))
	}
	ops = append(ops, datastore.WriteJSON(sb.key, rec), datastore.WriteJSON(h.key, h.withIP(handle, ip)))
	ok, err := m.commit(ctx, cmps, ops)
	return ip, ok, err
}

// claimAndAllocate creates a block affine to node holding ordinal ord for
// handle, together with the node's claim, in one transaction that fails if
// anyone created the block first.
func (m *IPAM) claimAndAllocate(ctx context.Context, pool poolInfo, st *blockState, ord int, node, handle string, h storedHandle) (netip.Addr, bool, error) {
	ip := st.addr(ord)
	cidr := st.prefix.String()
	bkey := datastore.BlockKey(cidr)
	cmps := []datastore.Guard{datastore.Unchanged(bkey, 0), datastore.Unchanged(h.key, h.rev), datastore.Unchanged(pool.key, pool.rev)}
	ops := []datastore.Write{
		datastore.WriteJSON(bkey, st.with(ord, handle)),
		datastore.WriteValue(datastore.AffinityKey(node, cidr), cidr),
		datastore.WriteJSON(h.key, h.withIP(handle, ip)),
	}
	ok, err := m.commit(ctx, cmps, ops)
	return ip, ok, err
}
