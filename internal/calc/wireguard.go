package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// WireGuard constants shared by every host, so peers agree without asking.
const (
	// WireGuardDevice is the encrypting device. Linux names hold at most
	// 15 bytes, so "wireguard.calico" cannot exist; Calico's own name is this.
	WireGuardDevice = "wireguard.cali"
	// WireGuardPort is the UDP port every host listens on.
	WireGuardPort = 51820
	// WireGuardMTU leaves room for WireGuard's 60 bytes (outer IPv4 20,
	// UDP 8, header 16, tag 16) in a 1500-byte underlay.
	WireGuardMTU = 1440
)

// WireGuardSupport is what the agent found this host can do.
type WireGuardSupport struct {
	// PublicKey is this host's own key (base64), "" when it has none.
	PublicKey string
	// Problem says in one line why the device cannot work, "" when it can.
	Problem string
}

// WireGuard is the desired WireGuard device of one host. The private key is
// not here: it never leaves the host's state directory and the dataplane
// package reads it there; calc only decides who the peers are.
type WireGuard struct {
	Enabled    bool
	Device     string
	ListenPort int
	MTU        int
	Peers      []WireGuardPeer // sorted by public key
	// CleartextFrom are sources that may reach pool addresses (PoolDsts)
	// only through the device: a packet from them arriving on any other
	// interface but a local workload's is a forgery and is dropped. Every
	// pool when unencrypted hosts are not allowed, else the keyed peers'
	// allowed IPs.
	CleartextFrom []netip.Prefix
	PoolDsts      []netip.Prefix
}

// WireGuardPeer is one remote host: its key, where it listens, and the
// inner addresses it may send from and that are routed to it (WireGuard's
// cryptokey routing: both directions use the same list).
type WireGuardPeer struct {
	Node       string
	PublicKey  string
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
}

// wgPlan is the cluster's encryption setting applied to this host, built
// once per Compute and filled while learned routes are shaped.
type wgPlan struct {
	on, allowPlain bool
	ready          bool // this host has a key and a working device
	byIP           map[netip.Addr]*WireGuardPeer
	pools          []netip.Prefix // IPv4 pools
}

func newWGPlan(in Input, pools []parsedPool) *wgPlan {
	cfg := in.Snap.Encryption
	p := &wgPlan{on: cfg.Enabled, allowPlain: cfg.AllowUnencrypted, byIP: map[netip.Addr]*WireGuardPeer{}}
	for _, pl := range pools {
		if pl.cidr.Addr().Is4() {
			p.pools = append(p.pools, pl.cidr)
		}
	}
	if !p.on {
		return p
	}
	p.ready = in.WireGuard.PublicKey != "" && in.WireGuard.Problem == ""
	for name, n := range in.Snap.Nodes {
		if name == in.Node || n.WireGuardPublicKey == "" {
			continue
		}
		if pfx, err := netip.ParsePrefix(n.IPv4); err == nil && pfx.Addr().Is4() {
			p.byIP[pfx.Addr()] = &WireGuardPeer{Node: name, PublicKey: n.WireGuardPublicKey, Endpoint: netip.AddrPortFrom(pfx.Addr(), WireGuardPort)}
		}
	}
	return p
}

// route shapes the route to a remote block (or address) in a pool owned by
// the node at nh. plain is the route it would have without encryption.
func (p *wgPlan) route(dst netip.Prefix, nh netip.Addr, plain Route) Route {
	if !p.on || !dst.Addr().Is4() {
		return plain
	}
	peer := p.byIP[nh]
	if p.ready && peer != nil {
		peer.AllowedIPs = append(peer.AllowedIPs, dst)
		return Route{Dst: dst, Kind: RouteLocal, Dev: WireGuardDevice}
	}
	if p.allowPlain {
		return plain
	}
	// Never out of the uplink in the clear: senders get an ICMP error.
	return Route{Dst: dst, Kind: RouteUnreachable}
}

// state is the device's desired state once every route has been shaped.
// Peers whose node publishes a key are configured even before a route
// needs them, so their handshakes can start. Besides the learned routes,
// a peer's allowed IPs are its blocks and its workloads' addresses from
// the datastore: those are known at once, while BGP takes seconds to
// re-learn after an agent restart (when the kernel keeps routes into the
// device that WireGuard would otherwise have no peer for).
func (p *wgPlan) state(s *Snapshot) WireGuard {
	if !p.on || !p.ready {
		return WireGuard{}
	}
	byName := map[string]*WireGuardPeer{}
	for _, peer := range p.byIP {
		byName[peer.Node] = peer
	}
	inPool := func(a netip.Prefix) bool {
		return slices.ContainsFunc(p.pools, func(pl netip.Prefix) bool { return pl.Bits() <= a.Bits() && pl.Contains(a.Addr()) })
	}
	for _, b := range s.Blocks {
		if peer := byName[b.Affinity]; peer != nil {
			if c, err := netip.ParsePrefix(b.CIDR); err == nil && c.Addr().Is4() && inPool(c.Masked()) {
				peer.AllowedIPs = append(peer.AllowedIPs, c.Masked())
			}
		}
	}
	for _, ep := range s.Endpoints {
		if peer := byName[ep.Node]; peer != nil {
			for _, a := range endpointPrefixes(ep) {
				if a.Addr().Is4() && inPool(a) {
					peer.AllowedIPs = append(peer.AllowedIPs, a)
				}
			}
		}
	}
	st := WireGuard{Enabled: true, Device: WireGuardDevice, ListenPort: WireGuardPort, MTU: WireGuardMTU}
	for _, peer := range p.byIP {
		peer.AllowedIPs = coverless(peer.AllowedIPs)
		st.Peers = append(st.Peers, *peer)
	}
	slices.SortFunc(st.Peers, func(a, b WireGuardPeer) int { return strings.Compare(a.PublicKey, b.PublicKey) })
	st.PoolDsts = p.pools
	if !p.allowPlain {
		st.CleartextFrom = p.pools
	} else {
		for _, peer := range st.Peers {
			st.CleartextFrom = append(st.CleartextFrom, peer.AllowedIPs...)
		}
		sortPrefixes(st.CleartextFrom)
	}
	return st
}

// problems reports what keeps traffic from being encrypted.
func (p *wgPlan) problems(in Input) []string {
	if !p.on {
		return nil
	}
	var out []string
	if !p.ready {
		why := in.WireGuard.Problem
		if why == "" {
			why = "this host has no key yet"
		}
		what := "cross-host workload traffic is refused (routes unreachable)"
		if p.allowPlain {
			what = "cross-host workload traffic goes unencrypted (allow-unencrypted is on)"
		}
		out = append(out, fmt.Sprintf("encryption is on but WireGuard does not work here: %s; %s", why, what))
	}
	for _, name := range sortedKeys(in.Snap.Nodes) {
		n := in.Snap.Nodes[name]
		if name == in.Node || n.WireGuardPublicKey != "" {
			continue
		}
		if p.allowPlain {
			out = append(out, fmt.Sprintf("node %s has published no WireGuard key: its workloads are reached unencrypted (allow-unencrypted is on)", name))
		} else {
			out = append(out, fmt.Sprintf("node %s has published no WireGuard key: its workloads are unreachable until it does (or `calicoctl encryption on --allow-unencrypted`)", name))
		}
	}
	return out
}

// coverless sorts ps and drops every prefix another one covers.
func coverless(ps []netip.Prefix) []netip.Prefix {
	sortPrefixes(ps)
	var out []netip.Prefix
	for _, p := range ps {
		if !slices.ContainsFunc(out, func(o netip.Prefix) bool { return o.Bits() <= p.Bits() && o.Contains(p.Addr()) }) {
			out = append(out, p)
		}
	}
	return out
}
