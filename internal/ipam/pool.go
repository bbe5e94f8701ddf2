package ipam

import (
	"cmp"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
)

// Default block sizes: 64 addresses, so a host claims few blocks (few routes)
// while a pool of a few hundred addresses still spreads over several hosts.
const (
	defaultBlockBits4 = 26
	defaultBlockBits6 = 122
)

// poolInfo is a stored pool decoded for allocation.
type poolInfo struct {
	pool      api.Pool
	prefix    netip.Prefix
	blockBits int // prefix length of the pool's blocks
	key       string
	rev       int64 // ModRevision, so a write can insist the pool is unchanged
	err       error // why the pool is unusable; nil when fine
}

func (p poolInfo) String() string {
	if p.prefix.IsValid() {
		return p.prefix.String()
	}
	return p.pool.CIDR
}

// parsePool decodes a stored pool. A pool that cannot be used still comes
// back (with err set) so errors can name it instead of pretending it is absent.
func parsePool(key string, value []byte, rev int64) poolInfo {
	pi := poolInfo{key: key, rev: rev}
	if err := json.Unmarshal(value, &pi.pool); err != nil {
		pi.err = fmt.Errorf("pool %s: bad JSON: %v", key, err)
		return pi
	}
	p, err := netip.ParsePrefix(pi.pool.CIDR)
	if err != nil {
		pi.err = fmt.Errorf("pool %q: %v", pi.pool.CIDR, err)
		return pi
	}
	pi.prefix = p.Masked()
	pi.blockBits, pi.err = blockBitsFor(pi.prefix, pi.pool.BlockSize)
	return pi
}

// blockBitsFor returns the prefix length of a pool's blocks: the configured
// size, the family default when 0, and the pool itself when it is smaller
// than a block.
func blockBitsFor(pool netip.Prefix, blockSize int) (int, error) {
	bitLen := pool.Addr().BitLen()
	bb := blockSize
	if bb == 0 {
		bb = defaultBlockBits4
		if bitLen == 128 {
			bb = defaultBlockBits6
		}
	}
	if bb > bitLen || bb < 0 {
		return 0, fmt.Errorf("pool %s: block size /%d is not a valid prefix length", pool, bb)
	}
	bb = max(bb, pool.Bits())
	if bitLen-bb > maxBlockHostBits {
		return 0, fmt.Errorf("pool %s: block size /%d is too large (at most %d addresses per block)", pool, bb, 1<<maxBlockHostBits)
	}
	return bb, nil
}

func (p poolInfo) is4() bool { return p.prefix.Addr().Is4() }

// blockFor returns the block of this pool that holds a.
func (p poolInfo) blockFor(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, p.blockBits).Masked()
}

// containsBlock reports whether block lies wholly inside the pool.
func (p poolInfo) containsBlock(b netip.Prefix) bool {
	return p.prefix.IsValid() && b.Bits() >= p.prefix.Bits() && p.prefix.Contains(b.Addr())
}

// reservedIn says whether the first and last ordinals of block are the
// pool's network and broadcast addresses. Automatic assignment skips those
// in IPv4 pools of /30 and wider: with /32 routes they would work, but hosts,
// routers and people still treat x.x.x.0 and x.x.x.255 of a subnet as special,
// and the surprise is not worth two addresses. Asking for one explicitly
// (Assign) is still allowed.
func (p poolInfo) reservedIn(block netip.Prefix) (first, last bool) {
	if !p.is4() || p.prefix.Bits() > 30 {
		return false, false
	}
	pf, pl := prefixRange(p.prefix)
	bf, bl := prefixRange(block)
	return pf == bf, pl == bl
}

// numBlocks returns how many blocks fit in the pool, capped at 1<<63: a
// larger count only happens for huge IPv6 pools, which never fill.
func (p poolInfo) numBlocks() uint64 {
	d := p.blockBits - p.prefix.Bits()
	if d >= 63 {
		return 1 << 63
	}
	return 1 << uint(d)
}

// blockAt returns the pool's i-th block.
func (p poolInfo) blockAt(i uint64) netip.Prefix {
	first, _ := prefixRange(p.prefix)
	host := uint(p.prefix.Addr().BitLen() - p.blockBits)
	return netip.PrefixFrom(fromU128(first.add(shl(i, host)), p.is4()), p.blockBits)
}

// nodeSeed spreads hosts over a pool: each host starts looking for a free
// block at a place derived from its name, so hosts claiming blocks at the
// same moment (a cluster booting) rarely race for the same one.
func nodeSeed(node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(node))
	return h.Sum64()
}

// chooseFreeBlock returns a block of the pool that overlaps none of existing,
// searching from seed onward and wrapping, or false when every block is taken.
func chooseFreeBlock(p poolInfo, existing []netip.Prefix, seed uint64) (netip.Prefix, bool) {
	if p.err != nil {
		return netip.Prefix{}, false
	}
	// Blocks of the pool's own size are found by exact lookup; others (left
	// over from a different block size) by overlap, so a free candidate is
	// never one that overlaps an odd-sized block.
	exact := map[netip.Prefix]bool{}
	var odd []netip.Prefix
	// bound is one more than the number of candidates existing blocks can
	// cover: among that many consecutive candidates at least one is free, so
	// the search stops there instead of walking a huge IPv6 pool.
	bound := uint64(1)
	addBound := func(n uint64) {
		if bound+n < bound {
			bound = ^uint64(0)
		} else {
			bound += n
		}
	}
	for _, e := range existing {
		if !e.Overlaps(p.prefix) {
			continue
		}
		if e.Bits() == p.blockBits {
			exact[e] = true
			addBound(1)
			continue
		}
		odd = append(odd, e)
		if d := p.blockBits - e.Bits(); d > 0 {
			addBound(1 << uint(min(d, 62)))
		} else {
			addBound(1)
		}
	}
	n := p.numBlocks()
	steps := min(n, bound)
	start := seed % n
	for k := uint64(0); k < steps; k++ {
		c := p.blockAt((start + k) % n)
		if exact[c] || slices.ContainsFunc(odd, c.Overlaps) {
			continue
		}
		return c, true
	}
	return netip.Prefix{}, false
}

// findPool returns the most specific pool containing a (pools should not
// overlap; if they do, the narrower one is the deliberate one).
func findPool(pools []poolInfo, a netip.Addr) (poolInfo, bool) {
	var best poolInfo
	found := false
	for _, p := range pools {
		if p.prefix.IsValid() && p.prefix.Contains(a) && (!found || p.prefix.Bits() > best.prefix.Bits()) {
			best, found = p, true
		}
	}
	return best, found
}

// poolForBlock returns the pool that contains block.
func poolForBlock(pools []poolInfo, b netip.Prefix) (poolInfo, bool) {
	var best poolInfo
	found := false
	for _, p := range pools {
		if p.containsBlock(b) && (!found || p.prefix.Bits() > best.prefix.Bits()) {
			best, found = p, true
		}
	}
	return best, found
}

// poolForAddr finds the pool for a specific address, with the messages users
// see from `calicoctl container add NAME IP`.
func poolForAddr(pools []poolInfo, a netip.Addr) (poolInfo, error) {
	if len(pools) == 0 {
		return poolInfo{}, errorf(ErrNoPools, "no pools configured; add one with calicoctl pool add CIDR")
	}
	p, ok := findPool(pools, a)
	if !ok {
		return poolInfo{}, errorf(ErrNotInPool, "%s is not in any pool; pools: %s", a, poolList(pools))
	}
	if p.err != nil {
		return poolInfo{}, errorf(ErrCorrupt, "%s is in pool %s, which is unusable: %v", a, p, p.err)
	}
	return p, nil
}

func poolList(pools []poolInfo) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = p.String()
	}
	return strings.Join(names, ", ")
}

func familyName(family int) string { return fmt.Sprintf("IPv%d", family) }

// selectPools picks the pools AutoAssign may use, in the order to try them:
// the caller's order when it names pools, else address order.
func selectPools(pools []poolInfo, family int, restrict []netip.Prefix) ([]poolInfo, error) {
	if len(pools) == 0 {
		return nil, errorf(ErrNoPools, "no pools configured; add one with calicoctl pool add CIDR")
	}
	want4 := family == 4
	if len(restrict) > 0 {
		var out []poolInfo
		for _, r := range restrict {
			i := slices.IndexFunc(pools, func(p poolInfo) bool { return p.prefix == r })
			if i < 0 {
				return nil, errorf(ErrNoPools, "pool %s does not exist; pools: %s", r, poolList(pools))
			}
			p := pools[i]
			switch {
			case p.err != nil:
				return nil, errorf(ErrCorrupt, "pool %s is unusable: %v", p, p.err)
			case p.is4() != want4:
				return nil, errorf(ErrInvalid, "pool %s is not an %s pool", p, familyName(family))
			case p.pool.Disabled:
				return nil, errorf(ErrNoPools, "pool %s is disabled", p)
			}
			out = append(out, p)
		}
		return out, nil
	}
	var out []poolInfo
	for _, p := range pools {
		if p.err == nil && p.is4() == want4 && !p.pool.Disabled {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errorf(ErrNoPools, "no enabled %s pools; add one with calicoctl pool add CIDR", familyName(family))
	}
	slices.SortFunc(out, func(a, b poolInfo) int { return comparePrefix(a.prefix, b.prefix) })
	return out, nil
}

// comparePrefix orders prefixes by address, then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}
