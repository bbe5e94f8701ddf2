package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
)

// An endpoint record is only a claim: anyone who can write the datastore can
// write one naming another workload's veth, or an address IPAM holds for
// someone else. Believing such a record would route a victim's traffic to
// the liar, give the victim's veth the liar's policy, or put the liar's (or
// a victim's) address into a tag set and so open other workloads' policy to
// it. So every record is checked against the two facts no endpoint record
// can change on its own:
//
//   - its interface must be the one derived from its node and workload
//     (api.WorkloadIfaceName), which every client that wires a workload
//     uses, so a record can only ever describe its own veth;
//   - each of its addresses must be allocated, in the IPAM block holding
//     it, to a handle of this very endpoint (api.EndpointHandles: the
//     workload's own handle, or for a libnetwork endpoint its node's driver
//     handle), so a record can only claim addresses taken for it.
//
// The check is cluster-wide, not only for this host's endpoints: remote
// endpoints feed tag membership, so a lying remote record must not put an
// address into a tag set here either. Records that fail are ignored
// entirely (no route, no policy, no membership, no announcement) and
// reported; they never tear down an honest endpoint, because an honest
// endpoint's interface and addresses cannot be claimed by another record.
//
// One case remains where two records pass alone: libnetwork endpoints of
// one node share the driver's handle, so two of them can claim the same
// address. Nothing in the snapshot tells the honest one from the liar, so
// both are ignored (fail closed): believing either could hand a victim's
// traffic to an attacker, while ignoring both only stops a workload that
// someone with datastore write access could have deleted anyway. The same
// holds for two records deriving one interface name (a hash collision).

// IgnoredEndpoint is an endpoint record the calculation does not believe.
type IgnoredEndpoint struct {
	Key    string // node/workload, as in Snapshot.Endpoints
	Node   string
	Reason string
}

func (ig IgnoredEndpoint) String() string {
	return fmt.Sprintf("endpoint %s ignored: %s", ig.Key, ig.Reason)
}

// CheckEndpoints splits the snapshot's endpoint records into those the
// calculation believes (by key) and those it ignores, sorted by key.
func CheckEndpoints(s *Snapshot) (accepted map[string]api.Endpoint, ignored []IgnoredEndpoint) {
	ignored = ignoredEndpoints(s)
	accepted = make(map[string]api.Endpoint, len(s.Endpoints))
	for k, ep := range s.Endpoints {
		accepted[k] = ep
	}
	for _, ig := range ignored {
		delete(accepted, ig.Key)
	}
	return accepted, ignored
}

// ignoredEndpoints is the work of CheckEndpoints. Every agent pass pays it
// for every endpoint of the cluster, so the common case (nothing wrong)
// allocates little: one map entry per address and interface.
func ignoredEndpoints(s *Snapshot) []IgnoredEndpoint {
	blocks := indexBlocks(s)
	reasons := map[string][]string{}
	claims := make(map[netip.Addr]string, len(s.Endpoints)) // address -> first endpoint claiming it
	ifaces := make(map[string]string, len(s.Endpoints))     // interface -> its endpoint
	var conflicts [][2]string                               // pairs of endpoints that cannot both be true
	var what []string
	var addrs []netip.Addr
	for key, ep := range s.Endpoints {
		var reason string
		addrs, reason = checkEndpoint(ep, blocks, addrs[:0])
		if reason != "" {
			reasons[key] = append(reasons[key], reason)
			continue
		}
		if other, dup := ifaces[ep.InterfaceName]; dup {
			conflicts = append(conflicts, [2]string{other, key})
			what = append(what, "interface "+ep.InterfaceName)
		}
		ifaces[ep.InterfaceName] = key
		for _, a := range addrs {
			if other, dup := claims[a]; dup && other != key {
				conflicts = append(conflicts, [2]string{other, key})
				what = append(what, "address "+a.String())
			}
			claims[a] = key
		}
	}
	// Fail closed where two records that each pass cannot both be true.
	for i, c := range conflicts {
		reasons[c[0]] = append(reasons[c[0]], fmt.Sprintf("%s is also claimed by %s; neither is believed", what[i], c[1]))
		reasons[c[1]] = append(reasons[c[1]], fmt.Sprintf("%s is also claimed by %s; neither is believed", what[i], c[0]))
	}
	ignored := make([]IgnoredEndpoint, 0, len(reasons))
	for key, rs := range reasons {
		slices.Sort(rs)
		ignored = append(ignored, IgnoredEndpoint{Key: key, Node: s.Endpoints[key].Node, Reason: strings.Join(slices.Compact(rs), "; ")})
	}
	slices.SortFunc(ignored, func(a, b IgnoredEndpoint) int { return strings.Compare(a.Key, b.Key) })
	return ignored
}

// checkEndpoint appends ep's addresses to addrs, or says why ep cannot be
// believed.
func checkEndpoint(ep api.Endpoint, blocks blockIndex, addrs []netip.Addr) ([]netip.Addr, string) {
	if want := api.WorkloadIfaceName(ep.Node, ep.Workload); ep.InterfaceName != want {
		return nil, fmt.Sprintf("interface %q is not its own (a workload %s on %s has %s)", clip(ep.InterfaceName), clip(ep.Workload), clip(ep.Node), want)
	}
	for _, nets := range [2][]string{ep.IPv4Nets, ep.IPv6Nets} {
		for _, n := range nets {
			a, ok := hostAddr(n)
			if !ok {
				return nil, fmt.Sprintf("address %q is not a single address", clip(n))
			}
			holder, assigned := blocks.holder(a)
			switch {
			case !assigned:
				return nil, fmt.Sprintf("address %s is not assigned in IPAM", a)
			case !api.OwnsHandle(ep, holder):
				return nil, fmt.Sprintf("address %s is held in IPAM by %s, not by this endpoint (%s)", a, clip(holder), strings.Join(api.EndpointHandles(ep), " or "))
			}
			addrs = append(addrs, a)
		}
	}
	return addrs, ""
}

// hostAddr reads "IP/32", "IP/128" or a bare IP.
func hostAddr(n string) (netip.Addr, bool) {
	if p, err := netip.ParsePrefix(n); err == nil {
		return p.Addr(), p.Bits() == p.Addr().BitLen()
	}
	a, err := netip.ParseAddr(n)
	return a, err == nil && a.Zone() == ""
}

// maxBlockHostBits is the largest block IPAM makes (and the agent's decoder
// accepts): 65536 addresses.
const maxBlockHostBits = 16

// blockIndex finds the block holding an address.
type blockIndex map[netip.Prefix]api.Block

func indexBlocks(s *Snapshot) blockIndex {
	idx := make(blockIndex, len(s.Blocks))
	for _, b := range s.Blocks {
		if p, err := netip.ParsePrefix(b.CIDR); err == nil && p.Addr().BitLen()-p.Bits() <= maxBlockHostBits {
			idx[p.Masked()] = b
		}
	}
	return idx
}

// holder is the handle a's block allocates it to. The most specific block
// holding a decides (blocks never overlap unless IPAM is corrupt, which
// `calicoctl ipam check` reports).
func (idx blockIndex) holder(a netip.Addr) (string, bool) {
	for bits := a.BitLen(); bits >= a.BitLen()-maxBlockHostBits; bits-- {
		p := netip.PrefixFrom(a, bits).Masked()
		b, ok := idx[p]
		if !ok {
			continue
		}
		h, ok := b.Allocations[ordinal(p, a)]
		return h, ok && h != ""
	}
	return "", false
}

// ordinal is a's offset in block p (at most maxBlockHostBits wide, so the
// low 32 bits of the two addresses decide).
func ordinal(p netip.Prefix, a netip.Addr) int {
	low := func(x netip.Addr) uint32 {
		b := x.As16()
		return uint32(b[12])<<24 | uint32(b[13])<<16 | uint32(b[14])<<8 | uint32(b[15])
	}
	return int(low(a) - low(p.Addr()))
}

// clip keeps a hostile value from turning one problem line into a megabyte.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// believedEndpoints returns a view of s holding only the endpoints
// CheckEndpoints accepts, and reports the others in r: this host's one by
// one, other hosts' as a count (their own hosts report them in detail).
func believedEndpoints(s *Snapshot, node string, r *Result) *Snapshot {
	ignored := ignoredEndpoints(s)
	r.Ignored = ignored
	remote := 0
	for _, ig := range ignored {
		if ig.Node == node {
			r.Problems = append(r.Problems, ig.String())
		} else {
			remote++
		}
	}
	if remote > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d endpoint record(s) of other hosts ignored: they name an interface or an address that is not theirs (listed by `calicoctl ipam check`)", remote))
	}
	if len(ignored) == 0 {
		return s
	}
	view := *s
	view.Endpoints = make(map[string]api.Endpoint, len(s.Endpoints))
	for k, ep := range s.Endpoints {
		view.Endpoints[k] = ep
	}
	for _, ig := range ignored {
		delete(view.Endpoints, ig.Key)
	}
	return &view
}
