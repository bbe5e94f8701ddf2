package ipam

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/datastore"
)

// LeakedIP is an address allocated to a handle that no live endpoint uses:
// typically a workload removed while its host was down, or a client that died
// between taking an address and recording the endpoint.
type LeakedIP struct {
	IP     string
	Handle string
	Block  string
}

// CheckReport is what `calicoctl ipam check` prints.
type CheckReport struct {
	Leaked   []LeakedIP
	Problems []string
}

// OK reports whether the check found nothing wrong.
func (r CheckReport) OK() bool { return len(r.Leaked) == 0 && len(r.Problems) == 0 }

// allocation is one address held in some block.
type allocation struct {
	block  netip.Prefix
	handle string
}

// checkSnapshot is the pure part of Check. live is the set of handles that
// should exist; nil means "unknown" and skips leak detection (an empty,
// non-nil map means no handle is live, so every allocation is leaked).
func checkSnapshot(s snapshot, live map[string]bool) CheckReport {
	var r CheckReport
	problem := func(format string, args ...any) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}

	for _, p := range s.pools {
		if p.err != nil {
			problem("%v", p.err)
		}
	}

	blocks := slices.Clone(s.blocks)
	sortBlocks(blocks)
	byPrefix := map[netip.Prefix]storedBlock{}
	held := map[netip.Addr]allocation{}
	for _, b := range blocks {
		if b.err != nil {
			problem("%v", b.err)
			continue
		}
		st := b.st
		if want := datastore.BlockKey(st.prefix.String()); b.key != want {
			problem("block %s is stored under %s, want %s", st.prefix, b.key, want)
		}
		byPrefix[st.prefix] = b
		r.Problems = append(r.Problems, st.bad...)
		if p, ok := poolForBlock(s.pools, st.prefix); !ok {
			problem("block %s lies outside every pool", st.prefix)
		} else if p.err == nil && p.blockBits != st.prefix.Bits() {
			problem("block %s does not match pool %s's block size /%d", st.prefix, p, p.blockBits)
		}
		for _, ord := range sortedOrdinals(st) {
			h := st.rec.Allocations[ord]
			a := st.addr(ord)
			if prev, dup := held[a]; dup {
				problem("%s is held twice: in block %s (handle %s) and block %s (handle %s)", a, prev.block, prev.handle, st.prefix, h)
				continue
			}
			held[a] = allocation{block: st.prefix, handle: h}
			if live != nil && !live[h] {
				r.Leaked = append(r.Leaked, LeakedIP{IP: a.String(), Handle: h, Block: st.prefix.String()})
			}
		}
	}
	checkOverlaps(blocks, problem)

	// Handles and blocks must agree both ways: the handle is how a workload's
	// addresses are released, the block is what stops them being handed out
	// twice.
	recorded := map[string]map[netip.Addr]bool{}
	for _, sh := range s.handles {
		if sh.err != nil {
			problem("%v", sh.err)
			continue
		}
		id := sh.h.ID
		if want := datastore.HandleKey(id); sh.key != want {
			problem("handle %q is stored under %s, want %s", id, sh.key, want)
		}
		ips := map[netip.Addr]bool{}
		recorded[id] = ips
		for _, txt := range sh.h.IPs {
			a, err := netip.ParseAddr(txt)
			if err != nil {
				problem("handle %s records a bad address %q", id, txt)
				continue
			}
			if ips[a] {
				problem("handle %s records %s twice", id, a)
			}
			ips[a] = true
			al, ok := held[a]
			switch {
			case !ok:
				problem("handle %s records %s, but no block allocates it", id, a)
			case al.handle != id:
				problem("handle %s records %s, but block %s allocates it to %s", id, a, al.block, al.handle)
			}
		}
	}
	addrs := make([]netip.Addr, 0, len(held))
	for a := range held {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		al := held[a]
		ips, ok := recorded[al.handle]
		switch {
		case !ok:
			problem("%s in block %s is allocated to handle %s, which has no handle record", a, al.block, al.handle)
		case !ips[a]:
			problem("%s in block %s is allocated to handle %s, but the handle does not record it", a, al.block, al.handle)
		}
	}

	// A block's affinity and its node's claim are written together; one
	// without the other means a host announces a block it does not own, or
	// owns one it does not announce.
	claimed := map[string]claim{}
	for _, c := range s.claims {
		claimed[c.key] = c
		if c.value != c.cidr {
			problem("claim %s holds %q, want %s", c.key, c.value, c.cidr)
		}
		p, err := netip.ParsePrefix(c.cidr)
		if err != nil {
			problem("claim %s names a bad block %q", c.key, c.cidr)
			continue
		}
		b, ok := byPrefix[p]
		switch {
		case !ok:
			problem("node %s claims block %s, which does not exist", c.node, p)
		case b.st.rec.Affinity != c.node:
			problem("node %s claims block %s, but the block's affinity is %q", c.node, p, b.st.rec.Affinity)
		}
	}
	for _, b := range blocks {
		if b.st == nil || b.st.rec.Affinity == "" {
			continue
		}
		if _, ok := claimed[datastore.AffinityKey(b.st.rec.Affinity, b.st.prefix.String())]; !ok {
			problem("block %s is affine to %s, but %s's claim on it is missing", b.st.prefix, b.st.rec.Affinity, b.st.rec.Affinity)
		}
	}

	slices.SortFunc(r.Leaked, func(a, b LeakedIP) int {
		return netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP))
	})
	return r
}

// checkOverlaps reports blocks that share addresses: each address must have
// exactly one block deciding whether it is free. blocks is sorted by address.
func checkOverlaps(blocks []storedBlock, problem func(string, ...any)) {
	var widest storedBlock // the block reaching furthest among those seen
	var widestLast u128
	for _, b := range blocks {
		if b.st == nil {
			continue
		}
		first, last := prefixRange(b.st.prefix)
		is4 := b.st.prefix.Addr().Is4()
		if widest.st != nil && widest.st.prefix.Addr().Is4() == is4 && first.cmp(widestLast) <= 0 {
			problem("blocks %s and %s overlap", widest.st.prefix, b.st.prefix)
		}
		if widest.st == nil || widest.st.prefix.Addr().Is4() != is4 || last.cmp(widestLast) > 0 {
			widest, widestLast = b, last
		}
	}
}

func sortedOrdinals(st *blockState) []int {
	ords := make([]int, 0, len(st.rec.Allocations))
	for o, h := range st.rec.Allocations {
		if o >= 0 && o < st.size && h != "" {
			ords = append(ords, o)
		}
	}
	slices.SortFunc(ords, cmp.Compare[int])
	return ords
}

// Check compares blocks, handles and claims at one revision. liveHandles is
// the set of handles that should exist (those of live endpoints); addresses
// held by any other handle are reported as leaked. nil skips leak detection.
func (m *IPAM) Check(ctx context.Context, liveHandles map[string]bool) (CheckReport, error) {
	r, err := m.read(ctx,
		datastore.ReadPrefix(datastore.PrefixPools),
		datastore.ReadPrefix(datastore.PrefixBlocks),
		datastore.ReadPrefix(datastore.PrefixHandles),
		datastore.ReadPrefix(datastore.PrefixAffinities))
	if err != nil {
		return CheckReport{}, err
	}
	s := snapshot{pools: parsePools(r[0])}
	for _, kv := range r[1] {
		s.blocks = append(s.blocks, parseBlockKV(kv.key, kv.value, kv.rev))
	}
	for _, kv := range r[2] {
		s.handles = append(s.handles, parseHandleKV(kv.key, kv.value, kv.rev))
	}
	for _, kv := range r[3] {
		s.claims = append(s.claims, parseClaimKV(kv.key, kv.value, kv.rev))
	}
	return checkSnapshot(s, liveHandles), nil
}
