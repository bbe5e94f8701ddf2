package ipam

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"

	"github.com/calico-go/calico/internal/api"
)

// maxBlockHostBits bounds a block at 65536 addresses: the whole block is one
// etcd value rewritten on every assignment, so a huge block would make each
// assignment slow and every concurrent assignment in it a conflict.
const maxBlockHostBits = 16

// blockState is a stored block decoded for allocation: its range and a bitmap
// of taken ordinals built from the record's allocation map.
type blockState struct {
	rec    api.Block
	prefix netip.Prefix
	size   int
	used   bitmap
	// bad lists allocations that cannot be addresses of this block (ordinal
	// out of range, empty handle); kept for Check, ignored for allocation.
	bad []string
}

// newBlockState decodes a block record. It fails only when the CIDR itself is
// unusable; odd allocations are noted in bad.
func newBlockState(rec api.Block) (*blockState, error) {
	p, err := netip.ParsePrefix(rec.CIDR)
	if err != nil {
		return nil, fmt.Errorf("block CIDR %q: %v", rec.CIDR, err)
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("block CIDR %q has host bits set", rec.CIDR)
	}
	host := p.Addr().BitLen() - p.Bits()
	if host > maxBlockHostBits {
		return nil, fmt.Errorf("block %s is larger than %d addresses", p, 1<<maxBlockHostBits)
	}
	s := &blockState{rec: rec, prefix: p, size: 1 << host}
	s.used = newBitmap(s.size)
	for ord, h := range rec.Allocations {
		switch {
		case ord < 0 || ord >= s.size:
			s.bad = append(s.bad, fmt.Sprintf("block %s: allocation ordinal %d (handle %q) is outside the block's %d addresses", p, ord, h, s.size))
		case h == "":
			s.bad = append(s.bad, fmt.Sprintf("block %s: address %s is allocated to an empty handle", p, s.addr(ord)))
			s.used.set(ord) // still taken: handing it out again could make a duplicate
		default:
			s.used.set(ord)
		}
	}
	return s, nil
}

// decodeBlock parses a stored block value.
func decodeBlock(value []byte) (*blockState, error) {
	var rec api.Block
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, fmt.Errorf("bad block JSON: %v", err)
	}
	return newBlockState(rec)
}

// addr returns the address of ordinal ord.
func (s *blockState) addr(ord int) netip.Addr {
	first, _ := prefixRange(s.prefix)
	return fromU128(first.add(u128{0, uint64(ord)}), s.prefix.Addr().Is4())
}

// ordinal returns a's position in the block, false when a lies outside it.
func (s *blockState) ordinal(a netip.Addr) (int, bool) {
	if !s.prefix.Contains(a) {
		return 0, false
	}
	first, _ := prefixRange(s.prefix)
	return int(toU128(a).sub(first).lo), true
}

// owner returns the handle holding ordinal ord.
func (s *blockState) owner(ord int) (string, bool) {
	h, ok := s.rec.Allocations[ord]
	return h, ok
}

// with returns the record with ord allocated to handle. The map is copied:
// the decoded state may be shared, and a failed transaction must not leave
// a phantom allocation behind in it.
func (s *blockState) with(ord int, handle string) api.Block {
	r := s.rec
	r.Allocations = maps.Clone(s.rec.Allocations)
	if r.Allocations == nil {
		r.Allocations = map[int]string{}
	}
	r.Allocations[ord] = handle
	return r
}

// without returns the record with the given ordinals freed.
func (s *blockState) without(ords ...int) api.Block {
	r := s.rec
	r.Allocations = maps.Clone(s.rec.Allocations)
	if r.Allocations == nil {
		r.Allocations = map[int]string{}
	}
	for _, o := range ords {
		delete(r.Allocations, o)
	}
	return r
}

// full says whether every address of the block is taken (reserved
// addresses aside, which depend on the pool: a block full but for its
// pool's network or broadcast address is not full here).
func (s *blockState) full() bool { return s.used.firstFree(s.size, false, false) < 0 }

// usedCount returns the number of recorded allocations.
func (s *blockState) usedCount() int { return len(s.rec.Allocations) }
