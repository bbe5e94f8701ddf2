package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/calico-go/calico/internal/api"
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
	// WireGuard is this host's key and device (wireguard.go).
	WireGuard WireGuardSupport
	// PublishPorts are the host ports workloads may publish; the zero
	// value means api.DefaultPublishPorts.
	PublishPorts api.PortRange
	// EndpointAddrs, when set and in step with Snap, spares Reendpoint's
	// clash check a read of every record (epaddrs.go); Compute does not
	// use it.
	EndpointAddrs *EndpointAddrs
}

// Peer types: where a session comes from.
const (
	PeerTypeNodeMesh = "node-mesh"
	PeerTypeGlobal   = "global"
	PeerTypeNode     = "node"
)

// Peer is a BGP session this host should have.
type Peer struct {
	IP   netip.Addr
	ASN  uint32
	Type string // PeerTypeNodeMesh, PeerTypeGlobal or PeerTypeNode
	Role string // RoleClient, RoleReflector or ""
	// MaxPrefixes limits what a configured peer may send per family (see
	// api.BGPPeer); 0 for sessions between our own nodes, whose routes the
	// import policy holds to their blocks and whose count grows with the
	// cluster.
	MaxPrefixes int
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
	// Imports turns learned paths into routes as this result did, for a
	// change of BGP's paths alone (RouteImport.Delta).
	Imports *RouteImport
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

	r.Dataplane.Workloads = workloadIfaces(local, pools, s.Encryption.Enabled)
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
	wg := newWGPlan(in, pools)
	r.Problems = append(r.Problems, wg.problems(in)...)

	// Routes learned from BGP that pass the import policy, each shaped by
	// the pool it falls in.
	vxlanPeers := map[netip.Addr]bool{}
	var ipipLearned []IPIPRoute
	r.Announce = announcements(ownBlocks, local)
	imports := &RouteImport{in: in, imp: newImporter(s, in.Node, pools, r.Announce), pools: pools, mine: myPrefix, wg: wg}
	imports.in.Learned = nil
	for _, dst := range sortedPrefixes(in.Learned) {
		lr := imports.route(dst, in.Learned[dst])
		r.Rejected = append(r.Rejected, lr.rejected...)
		if !lr.ok {
			continue
		}
		if lr.ipip {
			ipipLearned = append(ipipLearned, IPIPRoute{Dst: dst, Node: lr.nextHop})
		}
		if lr.vxlanNH.IsValid() {
			vxlanPeers[lr.vxlanNH] = true
		}
		r.Dataplane.Routes = append(r.Dataplane.Routes, lr.route)
	}
	if p := rejectedProblem(r.Rejected); p != "" {
		r.Problems = append(r.Problems, p)
	}
	r.Dataplane.VXLAN = vxlanState(s, in.Node, myPrefix, pools, vxlanPeers)
	imports.vxlanPeers = make(map[netip.Addr]bool, len(r.Dataplane.VXLAN.Peers))
	for _, p := range r.Dataplane.VXLAN.Peers {
		imports.vxlanPeers[p.HostIP] = true
	}
	r.Imports = imports
	r.Dataplane.IPIP = ipipState(in, myPrefix, pools, ipipLearned)
	r.Dataplane.WireGuard = wg.state(s)

	r.Dataplane.Policy = policy(s, local, pools)
	labelPolicy(s, local, &r.Dataplane.Policy, &r.Problems)
	r.Dataplane.Policy.ControlPlane = controlPlane(s, in)
	r.Dataplane.Policy.Published = allowedPublished(r.Dataplane.Policy.Published, in.PublishPorts, &r)
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
		if p.cidr.Addr().Is4() && p.pool.UsesVXLAN() {
			enabled = true
		}
	}
	if !enabled || !mine.IsValid() {
		return VXLAN{}
	}
	v := VXLAN{Enabled: true, Device: api.VXLANDevice, VNI: api.VXLANVNI, LocalIP: mine.Addr(), MAC: api.VTEPMAC(mine.Addr()), MTU: api.VXLANMTU}
	// Every other node is a potential tunnel peer, so a route can use the
	// tunnel the moment it is learned.
	for name, n := range s.Nodes {
		if name == node {
			continue
		}
		if p, err := netip.ParsePrefix(n.IPv4); err == nil {
			v.Peers = append(v.Peers, VTEP{HostIP: p.Addr(), MAC: api.VTEPMAC(p.Addr())})
		}
	}
	for nh := range used {
		if !slices.ContainsFunc(v.Peers, func(p VTEP) bool { return p.HostIP == nh }) {
			v.Peers = append(v.Peers, VTEP{HostIP: nh, MAC: api.VTEPMAC(nh)})
		}
	}
	sort.Slice(v.Peers, func(i, j int) bool { return v.Peers[i].HostIP.Less(v.Peers[j].HostIP) })
	return v
}

// allowedPublished keeps the published ports inside the allowed range and
// reports the others.
func allowedPublished(pubs []Published, allowed api.PortRange, r *Result) []Published {
	if allowed == (api.PortRange{}) {
		allowed = api.DefaultPublishPorts
	}
	out := pubs[:0:0]
	for _, p := range pubs {
		if p.HostPort < allowed.Min || p.HostPort > allowed.Max {
			r.Problems = append(r.Problems, fmt.Sprintf("published port %s/%d of %s: outside the ports workloads may publish (%d-%d; calicoctl node --publish-ports); not published",
				p.Proto, p.HostPort, p.Addr, allowed.Min, allowed.Max))
			continue
		}
		out = append(out, p)
	}
	return out
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
		e := EndpointPolicy{Interface: ep.InterfaceName, Group: ProfileGroup(ep.Profiles)}
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

// Route reflection roles of a session (Peer.Role).
const (
	RoleClient    = "client"    // we reflect the peer's routes (we are a reflector)
	RoleReflector = "reflector" // the peer is a route reflector
)

// peers are the BGP sessions this node should have: its configured peers
// (BGPPeers for every node or for this one), the full mesh when it is on,
// and, on a route reflector, every node that lists it as a peer. A
// reflector needs no configuration of its own (as in Calico v3): a
// non-reflector node that lists it is its client, another reflector a
// non-client peer. A session to a reflector is ordinary iBGP on the
// client's side. No node peers with its own addresses.
func peers(s *Snapshot, node string, myIP netip.Addr) []Peer {
	me := s.Nodes[node]
	_, my6 := api.NodeAddrs(me)
	// reflectors: the reflector nodes by IPv4 address; the address is what
	// peer records name.
	reflectors := map[netip.Addr]string{}
	for name, n := range s.Nodes {
		if v4, _ := api.NodeAddrs(n); n.RouteReflector && v4.IsValid() {
			reflectors[v4] = name
		}
	}
	byIP := map[netip.Addr]Peer{}
	add := func(ip netip.Addr, asn uint32, typ, role string, maxPrefixes int) {
		if !ip.IsValid() || ip == myIP || ip == my6 {
			return
		}
		if asn == 0 {
			asn = s.BGP.DefaultASNumber
		}
		if role == "" && reflectors[ip] != "" {
			role = RoleReflector
		}
		if _, dup := byIP[ip]; !dup {
			byIP[ip] = Peer{IP: ip, ASN: asn, Type: typ, Role: role, MaxPrefixes: maxPrefixes}
		}
	}
	parse := func(a string) netip.Addr {
		ip, _ := netip.ParseAddr(a)
		return ip.Unmap()
	}
	// Clients first: a node that lists us is our client however else we
	// know it (our own peer record for it, the mesh).
	if me.RouteReflector && myIP.IsValid() {
		listsMe := map[string]string{} // node name -> the type of its record
		for _, p := range s.NodePeers {
			if parse(p.IP) == myIP && p.Node != node {
				listsMe[p.Node] = PeerTypeNode
			}
		}
		for _, p := range s.GlobalPeers {
			if parse(p.IP) == myIP {
				for name := range s.Nodes {
					if _, ok := listsMe[name]; !ok && name != node {
						listsMe[name] = PeerTypeGlobal
					}
				}
			}
		}
		for name, typ := range listsMe {
			n, ok := s.Nodes[name]
			v4, _ := api.NodeAddrs(n)
			if !ok || !v4.IsValid() {
				continue
			}
			role := RoleClient
			if n.RouteReflector {
				role = RoleReflector // another reflector: a non-client
			}
			add(v4, n.ASNumber, typ, role, 0)
		}
	}
	// Explicit peers win over the mesh for the same address. A record that
	// names one of our own nodes (a reflector topology written as peers)
	// gets no prefix limit: that node passes on the cluster's routes, as
	// many as the cluster has, and the import policy holds each to its block.
	nodeAddr := make(map[netip.Addr]bool, len(s.Nodes))
	for _, n := range s.Nodes {
		v4, v6 := api.NodeAddrs(n)
		nodeAddr[v4], nodeAddr[v6] = true, true
	}
	delete(nodeAddr, netip.Addr{})
	limit := func(p api.BGPPeer) int {
		if nodeAddr[parse(p.IP)] {
			return 0
		}
		return p.EffectiveMaxPrefixes()
	}
	for _, p := range s.NodePeers {
		if p.Node == node {
			add(parse(p.IP), p.ASNumber, PeerTypeNode, "", limit(p))
		}
	}
	for _, p := range s.GlobalPeers {
		add(parse(p.IP), p.ASNumber, PeerTypeGlobal, "", limit(p))
	}
	if s.BGP.NodeMesh {
		for name, n := range s.Nodes {
			if name == node {
				continue
			}
			if v4, _ := api.NodeAddrs(n); v4.IsValid() {
				add(v4, n.ASNumber, PeerTypeNodeMesh, "", 0)
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
