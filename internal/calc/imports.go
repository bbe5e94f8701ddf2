package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/calico-go/calico/internal/api"
)

// The import policy: which routes learned over BGP may enter the kernel.
//
// A BGP peer is trusted to tell us where its own workloads are, nothing
// more. Without a filter any peer (a configured router, or a node whose
// agent is compromised) could announce 0.0.0.0/0, another host's address
// as a /32, or a block that belongs to another host, and this host would
// send that traffic to it. So a learned path is accepted only when:
//
//   - its prefix lies inside a pool (no shorter than the pool), and covers
//     no node's address;
//   - its next hop is not this node, and is of the prefix's family;
//   - when the session is with a node, the next hop is that node's own
//     address (nodes announce only their own routes), unless that node is
//     a route reflector: it passes on other nodes' routes with their next
//     hop kept, so from a reflector the next hop must be a node's address
//     (and the rules below hold that node to its own blocks and workloads);
//   - a single address that a workload's endpoint record holds comes only
//     from the node of that workload (this is how a workload whose address
//     was borrowed from another host's block is reached), and never for a
//     workload of this node;
//   - otherwise a prefix that lies in, or covers, a claimed block comes only
//     from the block's node (next hop = that node's address), and never
//     for a block of this node;
//   - a prefix in no claimed block is accepted from anyone (a router may
//     announce a range of a pool), unless its pool is disabled.
//
// Speaker.Learned reports every path of a prefix, best first, and the first
// one that passes is installed: a hostile path that wins BGP's best-path
// selection (an eBGP router beats the iBGP mesh) cannot shadow the honest
// one behind it. Every path refused is reported, so `calicoctl status` can
// count them per peer.

// LearnedPath is one path a BGP peer sent for a prefix.
type LearnedPath struct {
	// Neighbor is the address of the session the path came over.
	Neighbor netip.Addr
	NextHop  netip.Addr
}

// RejectedPath is a learned path the import policy refused.
type RejectedPath struct {
	Prefix   netip.Prefix
	Neighbor netip.Addr
	NextHop  netip.Addr
	Reason   string
}

// maxRejectedExamples bounds the problem line about refused routes.
const maxRejectedExamples = 3

// importer holds what the policy needs from the snapshot, indexed so that
// one path costs O(log n) whatever the cluster's size.
type importer struct {
	me        string
	mine      map[netip.Prefix]bool // what this node announces
	pools     []parsedPool
	nodeAt    map[netip.Addr]string // every node's IPv4 and IPv6 address
	reflector map[string]bool       // the route reflector nodes
	nodeAddrs []netip.Addr          // the same, sorted
	blockAt   map[netip.Prefix]string
	blocks    []netip.Prefix // claimed blocks, sorted by address; see covered
	blockBits []int          // the block lengths in use (26, 122, ...)
	endpoints map[string]api.Endpoint
	holders   map[netip.Addr][]string // built on first use: see holdersOf
	overlap   []netip.Prefix          // overlappingBlocks' result, reused
}

func newImporter(s *Snapshot, me string, pools []parsedPool, announced []netip.Prefix) *importer {
	im := &importer{
		me:        me,
		mine:      make(map[netip.Prefix]bool, len(announced)),
		pools:     pools,
		nodeAt:    make(map[netip.Addr]string, 2*len(s.Nodes)),
		blockAt:   make(map[netip.Prefix]string, len(s.Blocks)),
		reflector: map[string]bool{},
		endpoints: s.Endpoints,
	}
	for _, p := range announced {
		im.mine[p] = true
	}
	for name, n := range s.Nodes {
		if n.RouteReflector {
			im.reflector[name] = true
		}
		for _, a := range [2]string{n.IPv4, n.IPv6} {
			if a == "" {
				continue
			}
			if p, err := netip.ParsePrefix(a); err == nil {
				im.nodeAt[p.Addr().Unmap()] = name
			} else if ip, err := netip.ParseAddr(a); err == nil {
				im.nodeAt[ip.Unmap()] = name
			}
		}
	}
	for a := range im.nodeAt {
		im.nodeAddrs = append(im.nodeAddrs, a)
	}
	slices.SortFunc(im.nodeAddrs, netip.Addr.Compare)
	for _, b := range s.Blocks {
		c, err := netip.ParsePrefix(b.CIDR)
		if err != nil || b.Affinity == "" {
			continue
		}
		c = c.Masked()
		im.blockAt[c] = b.Affinity
		if !slices.Contains(im.blockBits, c.Bits()) {
			im.blockBits = append(im.blockBits, c.Bits())
		}
	}
	return im
}

// holdersOf names the nodes whose endpoints hold a, sorted. The index is
// built when a first single address is learned: most learned prefixes are
// blocks, and a pass should not pay for every endpoint of the cluster.
func (im *importer) holdersOf(a netip.Addr) []string {
	if im.holders == nil {
		im.holders = make(map[netip.Addr][]string, len(im.endpoints))
		for _, ep := range im.endpoints {
			for _, p := range endpointPrefixes(ep) {
				if !slices.Contains(im.holders[p.Addr()], ep.Node) {
					im.holders[p.Addr()] = append(im.holders[p.Addr()], ep.Node)
				}
			}
		}
		for _, hs := range im.holders {
			sort.Strings(hs)
		}
	}
	return im.holders[a]
}

// choose returns the first of paths (best first) the policy accepts, and
// appends every refused one to rejected.
func (im *importer) choose(dst netip.Prefix, paths []LearnedPath, rejected *[]RejectedPath) (LearnedPath, bool) {
	var chosen LearnedPath
	found := false
	for _, p := range paths {
		if im.mine[dst] && im.nodeAt[p.NextHop] == im.me && im.me != "" {
			// Our own route reflected back to us (a route server or a
			// router keeping next hops): harmless, and not news.
			continue
		}
		if why := im.refuse(dst, p); why != "" {
			*rejected = append(*rejected, RejectedPath{Prefix: dst, Neighbor: p.Neighbor, NextHop: p.NextHop, Reason: why})
			continue
		}
		if !found {
			chosen, found = p, true
		}
	}
	return chosen, found
}

// refuse says why the policy refuses path p to dst, or "" to accept it.
func (im *importer) refuse(dst netip.Prefix, p LearnedPath) string {
	nh := p.NextHop
	if !dst.IsValid() {
		return "invalid prefix"
	}
	if !nh.IsValid() || nh.Is4() != dst.Addr().Is4() {
		return fmt.Sprintf("next hop %s is not of the prefix's family", nh)
	}
	from := im.nodeAt[nh] // the node the path leads to; "" for a router
	if from != "" && from == im.me {
		return "next hop is this node"
	}
	pool := poolFor(im.pools, dst)
	if pool == nil {
		return "outside every pool"
	}
	if a, ok := im.nodeInside(dst); ok {
		return fmt.Sprintf("covers node %s's address %s", im.nodeAt[a], a)
	}
	if nb := im.nodeAt[p.Neighbor]; nb != "" && nb != from {
		switch {
		case !im.reflector[nb]:
			return fmt.Sprintf("node %s announced next hop %s, which is not its own", nb, nh)
		case from == "":
			return fmt.Sprintf("route reflector %s passed on next hop %s, which is no node's", nb, nh)
		}
		// A reflected route: judged below as if from the node it leads to.
	}
	if dst.IsSingleIP() {
		if hs := im.holdersOf(dst.Addr()); len(hs) > 0 {
			switch {
			case slices.Contains(hs, im.me):
				return "address of a workload on this node"
			case from == "" || !slices.Contains(hs, from):
				return fmt.Sprintf("address of a workload on %s, announced with another next hop", strings.Join(hs, ","))
			}
			// A workload's address from its own host, wherever it was
			// borrowed from.
			return ""
		}
	}
	claimed := false
	for _, b := range im.overlappingBlocks(dst) {
		claimed = true
		switch owner := im.blockAt[b]; {
		case owner == im.me:
			return fmt.Sprintf("%s this node's block %s", insideOrCovers(dst, b), b)
		case owner != from:
			return fmt.Sprintf("%s block %s of node %s, announced with another next hop", insideOrCovers(dst, b), b, owner)
		}
	}
	if !claimed && pool.pool.Disabled {
		// A disabled pool still routes the blocks hosts hold, but no new
		// range of it should appear.
		return fmt.Sprintf("unclaimed range of disabled pool %s", pool.cidr)
	}
	return ""
}

func insideOrCovers(dst, block netip.Prefix) string {
	if dst.Bits() >= block.Bits() {
		return "inside"
	}
	return "covers"
}

// nodeInside returns a node address inside dst, if any.
func (im *importer) nodeInside(dst netip.Prefix) (netip.Addr, bool) {
	first := dst.Masked().Addr()
	i, _ := slices.BinarySearchFunc(im.nodeAddrs, first, netip.Addr.Compare)
	if i < len(im.nodeAddrs) && dst.Contains(im.nodeAddrs[i]) {
		return im.nodeAddrs[i], true
	}
	return netip.Addr{}, false
}

// overlappingBlocks returns the claimed blocks that contain dst or that dst
// contains. Blocks are aligned prefixes, so these are the blocks that
// contain dst's first address, plus those starting inside dst. The result
// is valid until the next call.
func (im *importer) overlappingBlocks(dst netip.Prefix) []netip.Prefix {
	dst = dst.Masked()
	out := im.overlap[:0]
	defer func() { im.overlap = out }()
	for _, bits := range im.blockBits {
		if bits > dst.Bits() {
			continue
		}
		if b, err := dst.Addr().Prefix(bits); err == nil {
			if _, ok := im.blockAt[b]; ok {
				out = append(out, b)
			}
		}
	}
	if slices.ContainsFunc(im.blockBits, func(bits int) bool { return bits > dst.Bits() }) {
		blocks := im.sortedBlocks()
		i, _ := slices.BinarySearchFunc(blocks, dst, func(b, d netip.Prefix) int { return b.Addr().Compare(d.Addr()) })
		for ; i < len(blocks) && dst.Contains(blocks[i].Addr()); i++ {
			if b := blocks[i]; b.Bits() > dst.Bits() {
				out = append(out, b)
			}
		}
	}
	return out
}

// sortedBlocks lists the claimed blocks by address. It is made when a first
// learned prefix shorter than a block is checked: nodes announce blocks and
// single addresses, so most passes never need it.
func (im *importer) sortedBlocks() []netip.Prefix {
	if im.blocks == nil {
		im.blocks = make([]netip.Prefix, 0, len(im.blockAt))
		for b := range im.blockAt {
			im.blocks = append(im.blocks, b)
		}
		sortPrefixes(im.blocks)
	}
	return im.blocks
}

// rejectedProblem is the one status line about refused routes: how many,
// a few examples, and what the rest amount to.
func rejectedProblem(rej []RejectedPath) string {
	if len(rej) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "BGP import policy refused %d learned route(s) (routes must lie in a pool, cover no node address, and a claimed block or workload address must come from its own node, directly or through a route reflector): ", len(rej))
	for i, r := range rej {
		if i == maxRejectedExamples {
			fmt.Fprintf(&b, "; and %d more", len(rej)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s via %s from %s (%s)", r.Prefix, r.NextHop, r.Neighbor, r.Reason)
	}
	return b.String()
}

// RejectedByNeighbor counts refused paths per peer address.
func (r Result) RejectedByNeighbor() map[netip.Addr]int {
	out := map[netip.Addr]int{}
	for _, rj := range r.Rejected {
		out[rj.Neighbor]++
	}
	return out
}
