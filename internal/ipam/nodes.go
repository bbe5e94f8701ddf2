// Releasing a removed node's blocks and claims.

package ipam

import (
	"context"

	"github.com/calico-go/calico/internal/datastore"
)

// ReleaseNodeBlocks is for removing a node: its empty blocks are deleted,
// blocks still holding addresses lose their affinity (the addresses stay
// assigned; another node may adopt the block later), and its claims go.
func (m *IPAM) ReleaseNodeBlocks(ctx context.Context, node string) error {
	if err := checkName("node name", node); err != nil {
		return err
	}
	return m.retry(ctx, func() (bool, error) {
		r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks), datastore.ReadPrefix(datastore.AffinityPrefix(node)))
		if err != nil {
			return false, err
		}
		var blocks []storedBlock
		for _, kv := range r[0] {
			if sb := m.parseBlock(kv); sb.err == nil {
				blocks = append(blocks, sb)
			}
		}
		var claims []claim
		for _, kv := range r[1] {
			claims = append(claims, parseClaimKV(kv.key, kv.value, kv.rev))
		}
		for _, s := range planNodeRelease(node, blocks, claims) {
			var cmps []datastore.Guard
			var ops []datastore.Write
			if s.block != nil {
				cmps = append(cmps, datastore.Unchanged(s.block.key, s.block.rev))
				if s.deleteBlock {
					ops = append(ops, datastore.WriteDelete(s.block.key))
				} else {
					rec := s.block.st.rec
					rec.Affinity = ""
					ops = append(ops, datastore.WriteJSON(s.block.key, rec))
				}
			}
			if s.claim != nil {
				cmps = append(cmps, datastore.Unchanged(s.claim.key, s.claim.rev))
				ops = append(ops, datastore.WriteDelete(s.claim.key))
			}
			ok, err := m.commit(ctx, cmps, ops)
			if err != nil || !ok {
				// Lost a race: re-plan from a fresh read; steps already done
				// no longer show up in it.
				return false, err
			}
		}
		return true, nil
	})
}

// releaseStep is one transaction of ReleaseNodeBlocks: a block of the node
// (deleted when empty, else stripped of affinity) and/or its claim.
type releaseStep struct {
	block       *storedBlock
	deleteBlock bool
	claim       *claim
}

// planNodeRelease is the pure part of ReleaseNodeBlocks. Blocks are found by
// their affinity as well as by claims, so a half-written state left by older
// code or a manual edit is cleaned up too.
func planNodeRelease(node string, blocks []storedBlock, claims []claim) []releaseStep {
	byKey := map[string]*claim{}
	for i := range claims {
		byKey[claims[i].key] = &claims[i]
	}
	var steps []releaseStep
	for i := range blocks {
		b := &blocks[i]
		if b.st == nil || b.st.rec.Affinity != node {
			continue
		}
		ckey := datastore.AffinityKey(node, b.st.prefix.String())
		s := releaseStep{block: b, deleteBlock: b.st.usedCount() == 0, claim: byKey[ckey]}
		delete(byKey, ckey)
		steps = append(steps, s)
	}
	for _, c := range claims {
		if _, ok := byKey[c.key]; ok {
			steps = append(steps, releaseStep{claim: byKey[c.key]})
		}
	}
	return steps
}
