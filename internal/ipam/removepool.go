// Removing a pool with its empty blocks, refused while addresses in it are
// assigned.

package ipam

import (
	"context"
	"net/netip"
	"strings"

	"github.com/calico-go/calico/internal/datastore"
)

// InUse counts the addresses assigned inside poolCIDR, so a pool still in use
// is not removed. To remove a pool safely, disable it first (AutoAssign stops
// using it: its writes are guarded by the pool's revision), then check InUse.
func (m *IPAM) InUse(ctx context.Context, poolCIDR string) (int, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(poolCIDR))
	if err != nil {
		return 0, errorf(ErrInvalid, "bad pool CIDR %q: %v", poolCIDR, err)
	}
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return 0, err
	}
	return countInPrefix(blocks, p.Masked()), nil
}

// maxPoolRemoveOps keeps a pool removal's transactions well under etcd's
// default limit of 128 operations per transaction.
const maxPoolRemoveOps = 100

// RemovePool deletes the pool stored at poolKey together with its empty
// blocks and their claims. It refuses, with ErrInUse and the count, while
// addresses inside the pool are assigned, unless force is set; forced, blocks
// still holding addresses are kept (their addresses stay assigned, and
// `ipam check` lists them as outside every pool until they are released).
//
// The count and the delete cannot be separated by an assignment: the delete
// is one transaction guarded by the pool's revision and by no block key
// having changed since the count was read, and every assignment writes a
// block key and is itself guarded by the pool's revision. This is stronger
// than disabling the pool before counting, and has no side effect when the
// removal is refused: disabling (and re-enabling) the last pool of a family
// would make concurrent automatic assignments fail meanwhile.
func (m *IPAM) RemovePool(ctx context.Context, poolKey string, force bool) (inUse int, err error) {
	err = m.retry(ctx, func() (bool, error) {
		r, rev, err := m.readAt(ctx,
			datastore.ReadKey(poolKey),
			datastore.ReadPrefix(datastore.PrefixBlocks),
			datastore.ReadPrefix(datastore.PrefixAffinities))
		if err != nil {
			return false, err
		}
		if len(r[0]) == 0 {
			return false, errorf(ErrNoPools, "no pool at %s; list pools with `calicoctl pool show`", poolKey)
		}
		pool := parsePool(r[0][0].key, r[0][0].value, r[0][0].rev)
		if !pool.prefix.IsValid() {
			// An undecodable pool holds no blocks we could recognise.
			return m.commit(ctx, []datastore.Guard{datastore.Unchanged(poolKey, pool.rev)}, []datastore.Write{datastore.WriteDelete(poolKey)})
		}
		var blocks []storedBlock
		for _, e := range r[1] {
			if sb := m.parseBlock(e); sb.err == nil {
				blocks = append(blocks, sb)
			}
		}
		inUse = countInPrefix(blocks, pool.prefix)
		if inUse > 0 && !force {
			return false, errorf(ErrInUse, "pool %s has %d address(es) in use; remove those workloads first, or use --force", pool.prefix, inUse)
		}
		var claims []claim
		for _, e := range r[2] {
			claims = append(claims, parseClaimKV(e.key, e.value, e.rev))
		}
		groups := poolRemovalOps(pool, blocks, claims)
		var ops []datastore.Write
		var cmps []datastore.Guard
		for len(groups) > 0 && len(ops)+len(groups[0].ops) <= maxPoolRemoveOps {
			ops = append(ops, groups[0].ops...)
			if groups[0].block != nil {
				cmps = append(cmps, datastore.Unchanged(groups[0].block.key, groups[0].block.rev))
			}
			groups = groups[1:]
		}
		if len(groups) > 0 {
			// Too many for one transaction: delete this batch of empty
			// blocks (harmless on its own: each is guarded by its revision)
			// and start over from a fresh read.
			if _, err := m.commit(ctx, cmps, ops); err != nil {
				return false, err
			}
			return false, nil
		}
		cmps = []datastore.Guard{
			datastore.Unchanged(poolKey, pool.rev),
			datastore.NoneChangedAfter(datastore.PrefixBlocks, rev),
		}
		return m.commit(ctx, cmps, append([]datastore.Write{datastore.WriteDelete(poolKey)}, ops...))
	})
	return inUse, err
}

// removal is the deletion of one empty block with its claim, or of one
// claim left without its block.
type removal struct {
	block *storedBlock
	ops   []datastore.Write
}

// poolRemovalOps plans the deletion of the pool's empty blocks with their
// claims, and of any other claim on a block of the pool that is absent or
// being deleted.
func poolRemovalOps(pool poolInfo, blocks []storedBlock, claims []claim) []removal {
	var out []removal
	deleted := map[string]bool{}                                       // claim keys deleted with their block
	existing, gone := map[netip.Prefix]bool{}, map[netip.Prefix]bool{} // blocks, and those being deleted
	for i := range blocks {
		sb := &blocks[i]
		existing[sb.st.prefix] = true
		if !pool.containsBlock(sb.st.prefix) || sb.st.usedCount() > 0 {
			continue
		}
		gone[sb.st.prefix] = true
		r := removal{block: sb, ops: []datastore.Write{datastore.WriteDelete(sb.key)}}
		if sb.st.rec.Affinity != "" {
			k := datastore.AffinityKey(sb.st.rec.Affinity, sb.st.prefix.String())
			deleted[k] = true
			r.ops = append(r.ops, datastore.WriteDelete(k))
		}
		out = append(out, r)
	}
	for _, c := range claims {
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil || deleted[c.key] || existing[p] && !gone[p] || !pool.containsBlock(p) {
			continue
		}
		out = append(out, removal{ops: []datastore.Write{datastore.WriteDelete(c.key)}})
	}
	return out
}

// countInPrefix counts allocated addresses inside p.
func countInPrefix(blocks []storedBlock, p netip.Prefix) int {
	n := 0
	for _, sb := range blocks {
		if !sb.st.prefix.Overlaps(p) {
			continue
		}
		if p.Bits() <= sb.st.prefix.Bits() {
			n += len(sortedOrdinals(sb.st))
			continue
		}
		for _, ord := range sortedOrdinals(sb.st) {
			if p.Contains(sb.st.addr(ord)) {
				n++
			}
		}
	}
	return n
}
