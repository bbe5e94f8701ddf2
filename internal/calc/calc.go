package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/calico-go/calico/internal/api"
)

// VXLAN constants shared by every host, so peers agree without asking.
const (
	VXLANDevice = "vxlan.calico"
	VXLANVNI    = 4096
	VXLANMTU    = 1450
)

// Input is what one host's calculation depends on.
type Input struct {
	Node string
	Snap *Snapshot
	// Learned is every path BGP peers sent, per prefix, best first; the
	// import policy (imports.go) decides which may be installed.
	Learned map[netip.Prefix][]LearnedPath
	// HaveIPIP says whether this kernel can make IPIP tunnels.
	HaveIPIP bool
	IPIP     IPIPSupport // the eBPF path, for kernels without (ipip.go)
	// ControlHosts and ControlTCPPorts are the control plane the agent
	// knows beyond every node's BGP and VXLAN ports: the datastore's hosts,
	// its client and peer ports, the agent's own listeners.
	ControlHosts    []netip.Addr
	ControlTCPPorts []uint16
}

// Peer is a BGP session this host should have.
type Peer struct {
	IP   netip.Addr
	ASN  uint32
	Type string // node-mesh, global, node
}

// Result is the desired state of the host: kernel, BGP, and what is wrong.
type Result struct {
	Dataplane Dataplane
	ASN       uint32
	Announce  []netip.Prefix
	Peers     []Peer
	// Problems are conditions a user must fix; the node reports them in status.
	Problems []string
	// Rejected are the learned paths the import policy refused, sorted by
	// prefix (and, within a prefix, in the order BGP ranked them).
	Rejected []RejectedPath
	// Ignored are the endpoint records, of every host, the calculation does
	// not believe (see CheckEndpoints); this host's are also in Problems.
	Ignored []IgnoredEndpoint
}

// Compute derives the host's desired state. It is pure and deterministic:
// the same input always gives the same, sorted output.
func Compute(in Input) Result {
	var r Result
	// Pools that cover a node's address are dropped first; everything
	// below sees only the endpoint records that agree with their derived
	// interface and with IPAM.
	s, screened := screenPools(in.Snap)
	r.Problems = screened
	s = believedEndpoints(s, in.Node, &r)
	me := s.Nodes[in.Node]
	myPrefix, _ := netip.ParsePrefix(me.IPv4)
	pools := parsePools(s)

	r.ASN = me.ASNumber
	if r.ASN == 0 {
		r.ASN = s.BGP.DefaultASNumber
	}

	ownBlocks := ownBlocks(s, in.Node)
	local := localEndpoints(s, in.Node)

	r.Dataplane.Workloads = workloadIfaces(local, pools)
	// Routes to local workloads, and blackholes for our own blocks.
	for _, ep := range local {
		for _, a := range endpointPrefixes(ep) {
			r.Dataplane.Routes = append(r.Dataplane.Routes, Route{Dst: a, Kind: RouteLocal, Dev: ep.InterfaceName})
		}
	}
	for _, b := range ownBlocks {
		r.Dataplane.Routes = append(r.Dataplane.Routes, Route{Dst: b, Kind: RouteBlackhole})
	}

	// Encapsulation problems are reported per pool, whether or not a route needs it yet.
	r.Problems = append(r.Problems, ipipProblems(in, pools)...)

	// Routes learned from BGP that pass the import policy, each shaped by
	// the pool it falls in.
	vxlanPeers := map[netip.Addr]bool{}
	var ipipLearned []IPIPRoute
	r.Announce = announcements(ownBlocks, local)
	imp := newImporter(s, in.Node, pools, r.Announce)
	for _, dst := range sortedPrefixes(in.Learned) {
		path, ok := imp.choose(dst, in.Learned[dst], &r.Rejected)
		if !ok {
			continue
		}
		nh := path.NextHop
		route := Route{Dst: dst, Kind: RouteVia, Gateway: nh}
		if p := poolFor(pools, dst); p != nil && dst.Addr().Is4() {
			if ipipPool(p) {
				ipipLearned = append(ipipLearned, IPIPRoute{Dst: dst, Node: nh})
			}
			switch {
			case encapNeeded(p.pool.IPIPMode, myPrefix, nh):
				route = ipipRoute(in, dst, nh)
			case encapNeeded(p.pool.VXLANMode, myPrefix, nh):
				route = Route{Dst: dst, Kind: RouteVia, Gateway: nh, Dev: VXLANDevice, OnLink: true}
				vxlanPeers[nh] = true
			}
		}
		r.Dataplane.Routes = append(r.Dataplane.Routes, route)
	}
	if p := rejectedProblem(r.Rejected); p != "" {
		r.Problems = append(r.Problems, p)
	}
	r.Dataplane.VXLAN = vxlanState(s, in.Node, myPrefix, pools, vxlanPeers)
	r.Dataplane.IPIP = ipipState(in, myPrefix, pools, ipipLearned)

	r.Dataplane.Policy = policy(s, local, pools)
	r.Dataplane.Policy.ControlPlane = controlPlane(s, in)
	r.Dataplane.Policy.VXLAN = vxlanGuard(s, in.Node, r.Dataplane.VXLAN.Enabled)
	r.Peers = peers(s, in.Node, myPrefix.Addr())
	return r
}

// encapNeeded applies a pool's mode to one next hop.
func encapNeeded(mode api.EncapMode, mine netip.Prefix, nh netip.Addr) bool {
	switch mode {
	case api.EncapAlways:
		return true
	case api.EncapCrossSubnet:
		return !mine.IsValid() || !mine.Masked().Contains(nh)
	}
	return false
}

type parsedPool struct {
	cidr netip.Prefix
	pool api.Pool
}

func parsePools(s *Snapshot) []parsedPool {
	var out []parsedPool
	for _, p := range s.Pools {
		if c, err := netip.ParsePrefix(p.CIDR); err == nil {
			out = append(out, parsedPool{c.Masked(), p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cidr.String() < out[j].cidr.String() })
	return out
}

// poolFor returns the most specific pool containing dst.
func poolFor(pools []parsedPool, dst netip.Prefix) *parsedPool {
	var best *parsedPool
	for i := range pools {
		p := &pools[i]
		if p.cidr.Bits() <= dst.Bits() && p.cidr.Contains(dst.Addr()) {
			if best == nil || p.cidr.Bits() > best.cidr.Bits() {
				best = p
			}
		}
	}
	return best
}

func ownBlocks(s *Snapshot, node string) []netip.Prefix {
	var out []netip.Prefix
	for _, b := range s.Blocks {
		if b.Affinity != node {
			continue
		}
		if c, err := netip.ParsePrefix(b.CIDR); err == nil {
			out = append(out, c.Masked())
		}
	}
	sortPrefixes(out)
	return out
}

func localEndpoints(s *Snapshot, node string) []api.Endpoint {
	var out []api.Endpoint
	for _, ep := range s.Endpoints {
		if ep.Node == node && ep.InterfaceName != "" {
			out = append(out, ep)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].InterfaceName < out[j].InterfaceName })
	return out
}

// endpointPrefixes returns an endpoint's addresses as host prefixes, skipping junk.
func endpointPrefixes(ep api.Endpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range append(append([]string{}, ep.IPv4Nets...), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			if a, aerr := netip.ParseAddr(n); aerr == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			} else {
				continue
			}
		}
		out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return out
}

func vxlanState(s *Snapshot, node string, mine netip.Prefix, pools []parsedPool, used map[netip.Addr]bool) VXLAN {
	enabled := false
	for _, p := range pools {
		if p.cidr.Addr().Is4() && p.pool.VXLANMode != "" && p.pool.VXLANMode != api.EncapNever {
			enabled = true
		}
	}
	if !enabled || !mine.IsValid() {
		return VXLAN{}
	}
	v := VXLAN{Enabled: true, Device: VXLANDevice, VNI: VXLANVNI, LocalIP: mine.Addr(), MAC: VTEPMAC(mine.Addr()), MTU: VXLANMTU}
	// Every other node is a potential tunnel peer, so a route can use the
	// tunnel the moment it is learned.
	for name, n := range s.Nodes {
		if name == node {
			continue
		}
		if p, err := netip.ParsePrefix(n.IPv4); err == nil {
			v.Peers = append(v.Peers, VTEP{HostIP: p.Addr(), MAC: VTEPMAC(p.Addr())})
		}
	}
	for nh := range used {
		if !slices.ContainsFunc(v.Peers, func(p VTEP) bool { return p.HostIP == nh }) {
			v.Peers = append(v.Peers, VTEP{HostIP: nh, MAC: VTEPMAC(nh)})
		}
	}
	sort.Slice(v.Peers, func(i, j int) bool { return v.Peers[i].HostIP.Less(v.Peers[j].HostIP) })
	return v
}

// VTEPMAC derives a host's tunnel MAC from its IPv4 address: locally
// administered, unicast, and the same on every host that computes it.
func VTEPMAC(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("66:cb:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// published are ep's ports as DNAT targets: to its first IPv4 address
// (IPv6 is not published). A mapping that does not parse is left out; the
// driver that wrote it validated it.
func published(ep api.Endpoint, addrs []netip.Addr) []Published {
	i := slices.IndexFunc(addrs, netip.Addr.Is4)
	if i < 0 || len(ep.Ports) == 0 {
		return nil
	}
	var out []Published
	for _, m := range ep.Ports {
		if m.Proto != "tcp" && m.Proto != "udp" || m.HostPort == 0 || m.Port == 0 {
			continue
		}
		pub := Published{Proto: m.Proto, HostPort: m.HostPort, Addr: addrs[i], Port: m.Port}
		if m.HostIP != "" {
			ip, err := netip.ParseAddr(m.HostIP)
			if err != nil || !ip.Unmap().Is4() {
				continue
			}
			if !ip.IsUnspecified() {
				pub.HostIP = ip.Unmap()
			}
		}
		out = append(out, pub)
	}
	return out
}

func policy(s *Snapshot, local []api.Endpoint, pools []parsedPool) Policy {
	p := Policy{Profiles: map[string]api.Profile{}, TagMembers: map[string]AddrSet{}}
	tags := map[string]bool{}
	for _, ep := range local {
		e := EndpointPolicy{Interface: ep.InterfaceName}
		for _, a := range endpointPrefixes(ep) {
			e.Addrs = append(e.Addrs, a.Addr())
		}
		p.Published = append(p.Published, published(ep, e.Addrs)...)
		for _, name := range ep.Profiles {
			prof, ok := s.Profiles[name]
			if !ok {
				continue // a missing profile allows nothing
			}
			e.Profiles = append(e.Profiles, name)
			p.Profiles[name] = prof
			for _, rl := range append(append([]api.Rule{}, prof.Inbound...), prof.Outbound...) {
				if rl.Src.Tag != "" {
					tags[rl.Src.Tag] = true
				}
				if rl.Dst.Tag != "" {
					tags[rl.Dst.Tag] = true
				}
			}
		}
		p.Endpoints = append(p.Endpoints, e)
	}
	for t := range tags {
		p.TagMembers[t] = AddrSet{}
	}
	// Membership is cluster-wide: a tag names every workload whose profiles carry it.
	for _, key := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[key]
		for _, name := range ep.Profiles {
			for _, t := range s.Profiles[name].Tags {
				set, wanted := p.TagMembers[t]
				if !wanted {
					continue
				}
				for _, a := range endpointPrefixes(ep) {
					if a.Addr().Is4() {
						set.V4 = appendUnique(set.V4, a.Addr())
					} else {
						set.V6 = appendUnique(set.V6, a.Addr())
					}
				}
				p.TagMembers[t] = set
			}
		}
	}
	for t, set := range p.TagMembers {
		slices.SortFunc(set.V4, func(a, b netip.Addr) int { return a.Compare(b) })
		slices.SortFunc(set.V6, func(a, b netip.Addr) int { return a.Compare(b) })
		p.TagMembers[t] = set
	}
	for _, pl := range pools {
		p.AllPools = append(p.AllPools, pl.cidr)
		if pl.pool.NATOutgoing {
			p.MasqueradePools = append(p.MasqueradePools, pl.cidr)
		}
	}
	return p
}

func appendUnique(s []netip.Addr, a netip.Addr) []netip.Addr {
	if slices.Contains(s, a) {
		return s
	}
	return append(s, a)
}

// announcements are our blocks plus single addresses we hold outside them
// (borrowed from another host's block), so the longest match finds us.
func announcements(own []netip.Prefix, local []api.Endpoint) []netip.Prefix {
	out := append([]netip.Prefix{}, own...)
	for _, ep := range local {
		for _, a := range endpointPrefixes(ep) {
			inOwn := slices.ContainsFunc(own, func(b netip.Prefix) bool { return b.Contains(a.Addr()) })
			if !inOwn {
				out = append(out, a)
			}
		}
	}
	sortPrefixes(out)
	return slices.Compact(out)
}

func peers(s *Snapshot, node string, myIP netip.Addr) []Peer {
	byIP := map[netip.Addr]Peer{}
	add := func(ipStr string, asn uint32, typ string) {
		ip, err := netip.ParseAddr(ipStr)
		if err != nil || ip == myIP {
			return
		}
		if asn == 0 {
			asn = s.BGP.DefaultASNumber
		}
		if _, dup := byIP[ip]; !dup {
			byIP[ip] = Peer{IP: ip, ASN: asn, Type: typ}
		}
	}
	// Explicit peers win over the mesh for the same address.
	for _, p := range s.NodePeers {
		if p.Node == node {
			add(p.IP, p.ASNumber, "node")
		}
	}
	for _, p := range s.GlobalPeers {
		add(p.IP, p.ASNumber, "global")
	}
	if s.BGP.NodeMesh {
		for name, n := range s.Nodes {
			if name == node {
				continue
			}
			if pfx, err := netip.ParsePrefix(n.IPv4); err == nil {
				add(pfx.Addr().String(), n.ASNumber, "node-mesh")
			}
		}
	}
	out := make([]Peer, 0, len(byIP))
	for _, p := range byIP {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sortPrefixes(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
