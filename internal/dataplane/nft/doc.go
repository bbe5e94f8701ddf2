// Package nft enforces a calc.Policy with nftables, in one inet table of our
// own ("calico") in the current network namespace, through the nft binary
// (sigs.k8s.io/knftables). It never touches any other table.
//
// # Layout
//
// Prerouting hook, before conntrack: anti-spoofing. A packet from a "cali*"
// interface passes only when (interface, source address) is in wl-src4 or
// wl-src6, the workloads' own addresses (or it is link-local ICMPv6:
// neighbour discovery). Checking before conntrack matters: a forged packet
// that matches another workload's established flow would otherwise be
// accepted by the forward chains' first rule.
//
//	from-wl-src (priority raw): iifname != "cali*" fib saddr oifname "cali*" drop;
//	                            iifname != "vxlan.calico" fib saddr oifname "vxlan.calico" drop;
//	                            iifname != "cali*" accept;
//	                            iifname . ip(6) saddr @wl-src4/6 accept; drop
//
// The first two (IPv4, and IPv6 but link-local) turn away a packet from
// anywhere else whose source this host routes to one of its workloads or
// into the VXLAN tunnel: the uplink's rp_filter is loose or off, and a
// machine on the fabric could otherwise claim such a source.
//
// Every packet of the host walks this chain, most of them leaving at its
// first rule. It stays in prerouting because it must cover every "cali*"
// interface, also one that no endpoint names yet (or any more): an inet
// ingress chain can only be bound to named devices (no wildcard on this
// kernel and nft), rp_filter acts after conntrack and not for IPv6, and
// TestKernelPolicy shows the forged datagram that gets in otherwise.
// Measured (issue 19.1, TestPacketCost and the bench's ablation), the
// chain's cost is within the noise, so a cheaper place would gain nothing
// measurable either (see the findings in pktcost_kernel_test.go).
//
// Forward hook, two base chains, so a packet between two workloads on this
// host needs both the sender's outbound and the receiver's inbound policy (an
// accept only ends one base chain; a drop ends the packet):
//
//	fwd-from-wl (priority filter-1): ct established,related accept; ct invalid drop;
//	                                 [control-plane guard]; iifname vmap @from-wl;
//	                                 iifname . iifgroup @wl-groups iifgroup vmap @grp-from;
//	                                 iifname "cali*" drop
//	fwd-to-wl   (priority filter):   ct established,related accept; ct invalid drop;
//	                                 oifname vmap @to-wl;
//	                                 oifname . oifgroup @wl-groups oifgroup vmap @grp-to;
//	                                 oifname "cali*" drop
//
// An established flow costs one conntrack test per base chain. A "cali*"
// interface without an endpoint is dropped, not let through.
//
// Per profile list: the endpoints that list the same profiles in the same
// order (and that no label policy applies to) share grp-out-G and grp-in-G,
// G being the device group (IFLA_GROUP) the agent gives their host sides
// (calc.ProfileGroup of the list; netdev.WorkloadIfaceSyncer keeps it).
// grp-out-G jumps to each profile's outbound chain in the list's order,
// then drops (the source was checked in prerouting; a family without
// addresses sends nothing); grp-in-G the same inbound. An endpoint with no
// profile therefore sends and receives nothing. The maps grp-from and
// grp-to find them by the packet's interface's group, and only for an
// (interface . group) pair in wl-groups, one element per endpoint: a group
// on any other device (a leftover veth, one set by hand) dispatches
// nothing, and an endpoint whose host side has no group yet is dropped.
// So one more endpoint of a list in use is three set elements (wl-src4,
// wl-src6, wl-groups): no chain, and no jump, which would make the kernel
// validate every chain reachable from the base chains on that commit, a
// walk that grew with the endpoints (1-2 ms of each add's nft run next to
// 1000, issue 19). Two lists that hash to one group (30 bits) are found
// and their endpoints dispatched by name instead.
//
// Per endpoint dispatched by name (label policies apply to it, its list's
// group collided, or its calc.EndpointPolicy has no Group): ep-out-IFACE
// and ep-in-IFACE, from the maps from-wl and to-wl, hold the same jumps
// and drop as a list's chains.
//
// Per profile (shared by all its endpoints): prof-in-NAME and prof-out-NAME
// hold its rules in order, allow = accept, deny = drop; what no rule decides
// returns to the endpoint chain and on to the next profile. A rule without
// any family-specific match is one nft rule for both families; a rule with a
// tag, a CIDR or icmp/icmpv6 becomes one rule per family it can match. A tag
// match is a lookup in the tag's membership set (tag4-TAG for IPv4, tag6-TAG
// for IPv6), so membership changes are set element edits, never rule edits.
//
// Label policies (calc.TierPolicy, Calico v3 GlobalNetworkPolicy, one
// tier) come before the profiles. Per policy and direction used by some
// local endpoint: pol-in-NAME / pol-out-NAME, its rules in order: Allow =
// accept, Deny = drop, Log = counter + log and on to the next rule, Pass =
// "oifname vmap @pass-in" (ingress) or "iifname vmap @pass-out" (egress).
// An endpoint that policies apply to in a direction gets a two-stage chain:
//
//	ep-in-IFACE:    jump pol-in-A; jump pol-in-B; drop      (end of tier)
//	eprof-in-IFACE: jump prof-in-P1; ...; drop               (the profiles)
//	pass-in:        "IFACE" : goto eprof-in-IFACE
//
// A policy that decides nothing returns to ep-in for the next one; Allow and
// Deny end the packet's walk; Pass leaves the policy chain for the
// endpoint's profile stage through the map (policy chains are shared, so
// the interface finds the stage: the receiving workload's oifname, the
// sending workload's iifname). Without a policy in a direction, ep-in holds
// the profile jumps as before and no stage exists.
//
// Rule selectors are sets: sel4-SEL and sel6-SEL (interval sets, named by
// the canonical selector, shared by every rule that names it) hold the
// addresses of every workload in the cluster whose labels match and the
// nets of every matching GlobalNetworkSet. A rule with a selector or
// nets is one nft rule per family it can match. Policy chains never name
// an endpoint: a workload appearing, leaving or changing labels anywhere
// is set element edits; a local one also writes its own chains.
//
// Workloads to the host (input hook, iifname "cali*"): replies to the host's
// own connections (established,related) and IPv6 neighbour and router
// solicitations and neighbour adverts pass; with the default HostAccessDrop
// everything else, echo included, is dropped: workloads cannot reach host
// services (the agent, BGP on 179, etcd, any listener). With
// HostAccessPolicy (calico-node --workload-to-host=policy) the workload's
// outbound chain decides, as for any destination, so a profile outbound rule
// opens a host service (the control-plane guard below still comes first).
// Traffic the host itself originates towards workloads (the output hook) is
// not filtered. Other hosts' services are ordinary destinations, apart from
// the control plane: a workload's outbound policy decides whether it reaches
// them.
//
// The control plane (calc.ControlPlane): new traffic from a workload to a
// control-plane port (set cp-ports, l4proto . port: BGP, VXLAN, the
// datastore's client and peer ports, the agent's listeners) of a
// control-plane host (cp-hosts4/6: every node address, the datastore's
// hosts) is dropped in fwd-from-wl before profile dispatch, whatever the
// profiles say, and in wl-to-host (on any of this host's addresses) before
// the profiles when HostAccessPolicy hands that chain to them. The workload's own host must do it: nat-outgoing
// gives workload traffic to node addresses the host's address, and the
// destination cannot tell it from the host's own. ControlPlanePolicy
// (calico-node --workload-control-plane=policy) leaves the rules out.
//
// VXLAN (calc.VXLANGuard): the input chain sends IPv4 UDP to the VXLAN port
// to vxlan-in, before the tunnel device decapsulates it. With a VXLAN pool,
// vxlan-in accepts a datagram only when its outer source and the inner IPv4
// source (read at fixed offsets from the UDP header) are in a vxlan-src-N
// set: every other node's address with the inner networks it owns, one
// hashed set per prefix length N, probed with the inner source masked to N
// bits (an interval set of ranges was a pipapo lookup per superpacket,
// 9-12% CPU per GB of the VXLAN path). Everything
// else is dropped: datagrams from addresses that are no node, inner packets
// that are not IPv4, inner sources that belong to another node. The inner
// Ethernet source is the sender's to write, so it proves nothing. Without a
// VXLAN pool vxlan-in is empty.
//
// NAT outgoing (postrouting, srcnat): from a pool with nat-outgoing (sets
// masq4/masq6) to anything outside every pool (pools4/pools6) is masqueraded,
// IPv4 and IPv6 alike.
//
// The NAT base chains (nat-out; dnat-pre and dnat-out, which send traffic
// to this host's addresses to the publish chain) exist only while they can
// match: nat-out with a nat-outgoing pool, the DNAT chains with a published
// port. A nat chain's hook runs for every tracked packet of the host, the
// established ones included, so an empty one is a per-packet cost deciding
// nothing (TestPacketCost measures the ablations). An incremental update
// adds them with the first such pool or port and deletes them with the
// last.
//
// Names of profiles, policies, selectors, tags and interfaces become nft names as prefix +
// sanitized, truncated name + a hash of the exact name (see objName).
//
// # Applying
//
// render (pure) turns a Policy into a ruleset; planFull and planIncremental
// (pure) turn rulesets into a knftables transaction; Enforcer runs it. The
// first Apply replaces the table in one atomic transaction; later ones send
// only the difference, rewritten by cacheFree into forms for which nft
// lists nothing from the kernel first (it would otherwise list every chain
// and set element of the table: most of a label change's cost at 1000
// endpoints). Chains are deleted after whatever refers to them:
// endpoint chains, then policy chains, then profile stages, then profiles.
// Input that cannot be enforced as written (a bad rule,
// a missing profile) is enforced fail-closed and reported in Stats.Problems.
package nft
