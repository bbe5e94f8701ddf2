// Read-only questions: which block holds an address, what blocks exist and
// whose they are, what an address is.

package ipam

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/datastore"
)

// BlockInfo describes a block for `calicoctl ipam show`.
type BlockInfo struct {
	CIDR     string
	Affinity string // node owning the block; "" when released
	Used     int
	Size     int
}

// IPInfo describes one address.
type IPInfo struct {
	IP       string
	Pool     string // "" when outside every pool
	Block    string // "" when no block holds it yet
	Affinity string
	Handle   string
	Assigned bool
}

// blockOf returns the block holding ip, or nil when there is none.
func (m *IPAM) blockOf(ctx context.Context, ip netip.Addr) (*storedBlock, error) {
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixPools))
	if err != nil {
		return nil, err
	}
	var expect netip.Prefix
	if p, ok := findPool(parsePools(r[0]), ip); ok && p.err == nil {
		expect = p.blockFor(ip)
	}
	sb, _, err := m.locateBlock(ctx, ip, expect)
	return sb, err
}

// locateBlock finds the block holding ip. It tries expect (the block the
// pool's block size implies) first; when that does not exist it scans every
// block key, so blocks of another size (a pool recreated with a different
// block size) or outside any pool (a pool removed under them) are still
// found. clash is an existing block overlapping expect without holding ip:
// creating expect would then make an address belong to two blocks.
func (m *IPAM) locateBlock(ctx context.Context, ip netip.Addr, expect netip.Prefix) (sb *storedBlock, clash netip.Prefix, err error) {
	get := func(key string) (*storedBlock, error) {
		r, err := m.read(ctx, datastore.ReadKey(key))
		if err != nil || len(r[0]) == 0 {
			return nil, err
		}
		return m.blockHolding(r[0][0], ip)
	}
	if expect.IsValid() {
		if b, err := get(datastore.BlockKey(expect.String())); b != nil || err != nil {
			return b, netip.Prefix{}, err
		}
	}
	r, err := m.read(ctx, datastore.ReadKeysUnder(datastore.PrefixBlocks))
	if err != nil {
		return nil, netip.Prefix{}, err
	}
	for _, kv := range r[0] {
		p, err := netip.ParsePrefix(datastore.UnescapeCIDR(strings.TrimPrefix(kv.key, datastore.PrefixBlocks)))
		if err != nil {
			continue
		}
		if p.Contains(ip) {
			b, err := get(kv.key)
			return b, netip.Prefix{}, err
		}
		if expect.IsValid() && p.Overlaps(expect) {
			clash = p
		}
	}
	return nil, clash, nil
}

// blockHolding decodes the block record kv, which should hold ip.
func (m *IPAM) blockHolding(kv kv, ip netip.Addr) (*storedBlock, error) {
	b := m.parseBlock(kv)
	if b.err != nil {
		return nil, errorf(ErrCorrupt, "%v", b.err)
	}
	if !b.st.prefix.Contains(ip) {
		return nil, errorf(ErrCorrupt, "block key %s holds block %s", kv.key, b.st.prefix)
	}
	return &b, nil
}

// notePools keeps the pools last read, for guessBlock.
func (m *IPAM) notePools(pools []poolInfo) {
	m.mu.Lock()
	m.lastPools = pools
	m.mu.Unlock()
}

// guessBlock is the block holding ip as the pools last read lay it out;
// invalid when they did not cover it. The caller checks the guess against
// the pools it reads with it.
func (m *IPAM) guessBlock(ip netip.Addr) netip.Prefix {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := findPool(m.lastPools, ip); ok && p.err == nil {
		return p.blockFor(ip)
	}
	return netip.Prefix{}
}

// Blocks lists every block with its affinity and use, in address order.
// Undecodable blocks are left out; Check reports them.
func (m *IPAM) Blocks(ctx context.Context) ([]BlockInfo, error) {
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]BlockInfo, 0, len(blocks))
	for _, sb := range blocks {
		out = append(out, BlockInfo{
			CIDR:     sb.st.prefix.String(),
			Affinity: sb.st.rec.Affinity,
			Used:     sb.st.usedCount(),
			Size:     sb.st.size,
		})
	}
	return out, nil
}

// BlockAffinities maps every block's CIDR to the node it is affine to ("" for
// none), for route calculation.
func (m *IPAM) BlockAffinities(ctx context.Context) (map[string]string, error) {
	blocks, err := m.allBlocks(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(blocks))
	for _, sb := range blocks {
		out[sb.st.prefix.String()] = sb.st.rec.Affinity
	}
	return out, nil
}

// BlocksOf returns the CIDRs of the blocks node has claimed, in address
// order, for BGP announcement. It reads only the node's claims, which are
// written in the same transactions as the blocks' affinity.
func (m *IPAM) BlocksOf(ctx context.Context, node string) ([]string, error) {
	if err := checkName("node name", node); err != nil {
		return nil, err
	}
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.AffinityPrefix(node)))
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, kv := range r[0] {
		if p, err := netip.ParsePrefix(parseClaimKV(kv.key, kv.value, kv.rev).cidr); err == nil {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, comparePrefix)
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out, nil
}

func (m *IPAM) allBlocks(ctx context.Context) ([]storedBlock, error) {
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixBlocks))
	if err != nil {
		return nil, err
	}
	var out []storedBlock
	for _, kv := range r[0] {
		if sb := m.parseBlock(kv); sb.err == nil {
			out = append(out, sb)
		}
	}
	sortBlocks(out)
	return out, nil
}

// Info describes ip: its pool, block, and holder. An address outside every
// pool is an error unless some block still holds it.
func (m *IPAM) Info(ctx context.Context, ip netip.Addr) (IPInfo, error) {
	ip, err := checkAddr(ip)
	if err != nil {
		return IPInfo{}, err
	}
	r, err := m.read(ctx, datastore.ReadPrefix(datastore.PrefixPools))
	if err != nil {
		return IPInfo{}, err
	}
	pools := parsePools(r[0])
	info := IPInfo{IP: ip.String()}
	var expect netip.Prefix
	if p, ok := findPool(pools, ip); ok {
		info.Pool = p.String()
		if p.err == nil {
			expect = p.blockFor(ip)
		}
	}
	sb, _, err := m.locateBlock(ctx, ip, expect)
	if err != nil {
		return IPInfo{}, err
	}
	if sb == nil {
		if info.Pool == "" {
			_, err := poolForAddr(pools, ip)
			return IPInfo{}, err
		}
		return info, nil
	}
	info.Block = sb.st.prefix.String()
	info.Affinity = sb.st.rec.Affinity
	ord, _ := sb.st.ordinal(ip)
	info.Handle, info.Assigned = sb.st.owner(ord)
	return info, nil
}
