package calc

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"

	"github.com/calico-go/calico/internal/api"
)

// Ports every node uses, so that peers agree without asking: BGP, and
// VXLAN (the tunnel device listens on VXLANPort).
const (
	BGPPort = 179
)

// The trust boundaries between workloads and nodes, as Felix draws them:
//
//   - Workloads never reach a node's control plane (the datastore's client
//     and peer ports, BGP, VXLAN, the agent's listeners), on any node
//     address, whatever their profiles say. The workload's own host must
//     enforce it: nat-outgoing masquerades workload traffic to node
//     addresses (outside every pool) with the host's own address, so the
//     destination cannot tell that a workload sent it.
//   - VXLAN is accepted from node addresses only, and from each node only
//     inner sources that node owns: what it announces (its blocks, and its
//     workloads' addresses outside them) and its own address. The inner
//     Ethernet source is written by the sender and proves nothing.
//   - A pool that contains a node's address is ignored, so no record can
//     make a host's address a workload's.

// controlPlane is every node's address and the datastore's hosts, with the
// ports workloads must not reach there.
func controlPlane(s *Snapshot, in Input) ControlPlane {
	hosts := make([]netip.Addr, 0, 2*len(s.Nodes)+len(in.ControlHosts))
	for _, n := range s.Nodes {
		v4, v6 := api.NodeAddrs(n)
		hosts = append(hosts, v4, v6)
	}
	hosts = append(hosts, in.ControlHosts...)
	var cp ControlPlane
	for _, a := range hosts {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap().WithZone("")
		if a.Is4() {
			cp.Hosts.V4 = append(cp.Hosts.V4, a)
		} else {
			cp.Hosts.V6 = append(cp.Hosts.V6, a)
		}
	}
	for _, set := range []*[]netip.Addr{&cp.Hosts.V4, &cp.Hosts.V6} {
		slices.SortFunc(*set, netip.Addr.Compare)
		*set = slices.Compact(*set)
	}
	cp.Ports = []L4Port{{"tcp", BGPPort}, {"udp", api.VXLANPort}, {"udp", WireGuardPort}}
	for _, p := range in.ControlTCPPorts {
		if p != 0 {
			cp.Ports = append(cp.Ports, L4Port{"tcp", p})
		}
	}
	slices.SortFunc(cp.Ports, func(a, b L4Port) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	cp.Ports = slices.Compact(cp.Ports)
	return cp
}

// vxlanGuard lists, when VXLAN is on here, every other node with the inner
// sources it may send through the tunnel. They come from the datastore
// (blocks and endpoints), not from BGP, so they are complete from the
// agent's first pass, before its BGP sessions come back after a restart,
// and no BGP peer can widen them.
func vxlanGuard(s *Snapshot, me string, enabled bool) VXLANGuard {
	if !enabled {
		return VXLANGuard{}
	}
	blocks := map[string][]netip.Prefix{}
	for _, b := range s.Blocks {
		if c, err := netip.ParsePrefix(b.CIDR); err == nil && b.Affinity != "" {
			blocks[b.Affinity] = append(blocks[b.Affinity], c.Masked())
		}
	}
	eps := map[string][]api.Endpoint{}
	for _, key := range sortedKeys(s.Endpoints) {
		ep := s.Endpoints[key]
		if ep.InterfaceName != "" {
			eps[ep.Node] = append(eps[ep.Node], ep)
		}
	}
	g := VXLANGuard{Enabled: true, Senders: make([]VXLANSender, 0, len(s.Nodes))}
	for name, n := range s.Nodes {
		addr, _ := api.NodeAddrs(n)
		if name == me || !addr.Is4() {
			continue // no IPv4 address: no tunnel to or from it
		}
		inner := []netip.Prefix{netip.PrefixFrom(addr, 32)}
		if len(blocks[name]) > 0 || len(eps[name]) > 0 {
			// What the node announces is what it may send from.
			for _, p := range announcements(blocks[name], eps[name]) {
				if p.Addr().Is4() {
					inner = append(inner, p)
				}
			}
			sortPrefixes(inner)
			inner = slices.Compact(inner)
		}
		g.Senders = append(g.Senders, VXLANSender{Addr: addr, Inner: inner})
	}
	sort.Slice(g.Senders, func(i, j int) bool { return g.Senders[i].Addr.Less(g.Senders[j].Addr) })
	// Two records with one address (a node re-registered under a new
	// name) send as one host.
	merged := g.Senders[:0]
	for _, sd := range g.Senders {
		if k := len(merged) - 1; k >= 0 && merged[k].Addr == sd.Addr {
			merged[k].Inner = append(merged[k].Inner, sd.Inner...)
			sortPrefixes(merged[k].Inner)
			merged[k].Inner = slices.Compact(merged[k].Inner)
			continue
		}
		merged = append(merged, sd)
	}
	g.Senders = merged
	return g
}

// screenPools leaves out every pool that contains a node's address, with a
// problem for each: such a pool (written straight to the datastore, or
// older than the node) would make a host's address a workload's. The
// snapshot is returned as it is when nothing is left out, else a copy that
// shares everything but the pools.
func screenPools(s *Snapshot) (*Snapshot, []string) {
	nodes := make([]api.Node, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		nodes = append(nodes, n)
	}
	var problems []string
	var keep map[string]api.Pool
	for _, key := range sortedKeys(s.Pools) {
		p, err := netip.ParsePrefix(s.Pools[key].CIDR)
		if err != nil {
			continue
		}
		node, addr, found := api.PoolOverNode(p.Masked(), nodes)
		if !found {
			continue
		}
		if keep == nil {
			keep = maps.Clone(s.Pools)
		}
		delete(keep, key)
		problems = append(problems, fmt.Sprintf("pool %s contains node %s's address %s: the pool is ignored (no workload may hold a host's address); remove it with `calicoctl pool remove %s`", p.Masked(), node, addr, p.Masked()))
	}
	if keep == nil {
		return s, nil
	}
	screened := *s
	screened.Pools = keep
	return &screened, problems
}
