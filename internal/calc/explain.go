package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/rules"
)

// Explain answers "why can A (not) reach B" from the very structures the
// nftables renderer turns into chains (Policy, EndpointPolicy, TierPolicy,
// TagMembers, SelectorMembers, ControlPlane, Published, Routes), walking
// them in the order the kernel walks the rendered chains (see
// internal/dataplane/nft/doc.go):
//
//   - the sending workload's host: anti-spoofing (prerouting), then for a
//     new flow to its own host the input chain (HostAccessDrop: nothing),
//     else the control-plane guard and the endpoint's outbound chain in
//     fwd-from-wl;
//   - an endpoint chain: the label policies that apply in that direction,
//     in tier order (Allow accepts, Deny drops, Log goes on, Pass jumps to
//     the profile stage, nothing decided: end-of-tier drop); without a
//     policy, or after a Pass, the profiles in the endpoint's order (allow
//     accepts, deny drops, no rule decided: the next profile; after the
//     last, or without any: drop);
//   - the receiving workload's host: a published port's DNAT (open to
//     everyone), or the endpoint's inbound chain in fwd-to-wl. Traffic a
//     host sends to its own workloads leaves through the output hook, which
//     is not filtered.
//
// It explains the first packet of a new flow: replies and later packets of
// an accepted flow pass as established.

// Protocol numbers a Flow carries.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
)

// Flow is the first packet of a new flow.
type Flow struct {
	Src   netip.Addr `json:"src"`
	Dst   netip.Addr `json:"dst"`
	Proto uint8      `json:"proto"`          // ProtoTCP, ProtoUDP, ProtoICMP or ProtoICMPv6
	Port  uint16     `json:"port,omitempty"` // TCP or UDP destination port
	// SrcPort is the TCP or UDP source port; 0 (an ephemeral port nobody
	// knows in advance) matches no rule that names source ports.
	SrcPort uint16 `json:"srcPort,omitempty"`
	// ICMPType and ICMPCode of an ICMP flow.
	ICMPType int `json:"icmpType,omitempty"`
	ICMPCode int `json:"icmpCode,omitempty"`
}

// Party is one end of a flow, resolved against the datastore.
type Party struct {
	Name  string     `json:"name"`            // as printed: "host1/worker-1", "outside", an address
	Addr  netip.Addr `json:"addr"`            // the address the flow uses
	Node  string     `json:"node,omitempty"`  // the workload's node, or the node whose address this is; "" outside the cluster
	Iface string     `json:"iface,omitempty"` // the workload's interface; "" for a node or the outside
}

// Stages of an explanation.
const (
	StageSpoof        = "anti-spoofing"
	StageHost         = "to-host"
	StageControlPlane = "control-plane"
	StageEgress       = "egress"
	StageNAT          = "nat"
	StageRoute        = "route"
	StageIngress      = "ingress"
)

// Verdicts of a step. Accept and drop end their stage (drop ends the
// flow); next, log and pass let it go on; info decides nothing.
const (
	VerdictAccept = "accept"
	VerdictDrop   = "drop"
	VerdictNext   = "next"
	VerdictLog    = "log"
	VerdictPass   = "pass"
	VerdictInfo   = "info"
)

// Step is one decision on the flow's way.
type Step struct {
	Stage   string `json:"stage"`
	Node    string `json:"node,omitempty"` // the host that enforces it
	Verdict string `json:"verdict"`
	What    string `json:"what"`           // what decided: a rule's place, a default
	Rule    string `json:"rule,omitempty"` // the rule's text
}

// Explanation is the verdict on a flow and how it was reached.
type Explanation struct {
	Allowed bool   `json:"allowed"`
	Verdict string `json:"verdict"` // "allowed" or "denied"
	Steps   []Step `json:"steps"`
}

// ExplainInput is everything Explain needs: the two ends, the packet, and
// the results of Compute for each end's node (nil for an end outside the
// cluster), as those nodes' agents compute them.
type ExplainInput struct {
	Src, Dst         Party
	Flow             Flow
	SrcNode, DstNode *Result
	// NodeAddrs names the nodes by address, to say where a route goes.
	NodeAddrs map[netip.Addr]string
}

// Explain walks the flow through both ends' policy and the route between
// them. It is pure.
func Explain(in ExplainInput) Explanation {
	e := &explainer{in: in}
	e.run()
	x := Explanation{Allowed: !e.denied, Steps: e.steps, Verdict: "allowed"}
	if e.denied {
		x.Verdict = "denied"
	}
	return x
}

type explainer struct {
	in     ExplainInput
	steps  []Step
	denied bool
}

func (e *explainer) add(s Step) {
	e.steps = append(e.steps, s)
	if s.Verdict == VerdictDrop {
		e.denied = true
	}
}

func (e *explainer) run() {
	src, dst, f := e.in.Src, e.in.Dst, e.in.Flow
	if src.Iface != "" && !e.fromWorkload() {
		return
	}
	if dst.Iface == "" && dst.Node != "" && e.in.DstNode != nil {
		if pub, ok := publishedFor(e.in.DstNode.Dataplane.Policy.Published, f); ok {
			e.add(Step{Stage: StageNAT, Node: dst.Node, Verdict: VerdictAccept,
				What: fmt.Sprintf("published port %s/%d -> %s:%d (open to everyone)", pub.Proto, pub.HostPort, pub.Addr, pub.Port)})
			e.route()
			return
		}
	}
	e.natOutgoing()
	if !e.route() {
		return
	}
	if dst.Iface == "" {
		if dst.Node != "" {
			e.add(Step{Stage: StageIngress, Node: dst.Node, Verdict: VerdictInfo,
				What: "to the node itself: its own firewall decides, not Calico"})
		}
		return
	}
	if e.in.DstNode == nil {
		e.add(Step{Stage: StageIngress, Node: dst.Node, Verdict: VerdictDrop, What: "no policy computed for " + dst.Node})
		return
	}
	if src.Iface == "" && src.Node == dst.Node {
		e.add(Step{Stage: StageIngress, Node: dst.Node, Verdict: VerdictAccept,
			What: "from its own host: the output hook is not filtered"})
		return
	}
	p := &e.in.DstNode.Dataplane.Policy
	ep := p.endpoint(dst.Iface)
	if ep == nil {
		e.add(Step{Stage: StageIngress, Node: dst.Node, Verdict: VerdictDrop,
			What: fmt.Sprintf("%s has no endpoint on %s: a cali* interface without one gets nothing", dst.Iface, dst.Node)})
		return
	}
	for _, s := range p.walk(ep, true, f) {
		s.Node = dst.Node
		e.add(s)
	}
}

// fromWorkload is the sending host's part for a workload source: false
// when it drops the flow.
func (e *explainer) fromWorkload() bool {
	src, dst, f := e.in.Src, e.in.Dst, e.in.Flow
	if e.in.SrcNode == nil {
		e.add(Step{Stage: StageEgress, Node: src.Node, Verdict: VerdictDrop, What: "no policy computed for " + src.Node})
		return false
	}
	p := &e.in.SrcNode.Dataplane.Policy
	ep := p.endpoint(src.Iface)
	if ep == nil {
		e.add(Step{Stage: StageSpoof, Node: src.Node, Verdict: VerdictDrop,
			What: fmt.Sprintf("%s has no endpoint on %s: a cali* interface without one sends nothing", src.Iface, src.Node)})
		return false
	}
	if !slices.Contains(ep.Addrs, f.Src) {
		e.add(Step{Stage: StageSpoof, Node: src.Node, Verdict: VerdictDrop,
			What: fmt.Sprintf("%s may send only from %s", src.Iface, joinAddrs(ep.Addrs))})
		return false
	}
	e.add(Step{Stage: StageSpoof, Node: src.Node, Verdict: VerdictAccept,
		What: fmt.Sprintf("%s sends from its own address %s", src.Iface, f.Src)})
	if dst.Iface == "" && dst.Node == src.Node {
		e.add(Step{Stage: StageHost, Node: src.Node, Verdict: VerdictDrop,
			What: "a workload to its own host: only replies pass (calico-node --workload-to-host=drop, the default)"})
		return false
	}
	if p.ControlPlane.blocks(f) {
		e.add(Step{Stage: StageControlPlane, Node: src.Node, Verdict: VerdictDrop,
			What: fmt.Sprintf("%s/%d on %s is the control plane: no workload reaches it (calico-node --workload-control-plane=drop, the default)", ProtoName(f.Proto), f.Port, f.Dst)})
		return false
	}
	for _, s := range p.walk(ep, false, f) {
		s.Node = src.Node
		e.add(s)
	}
	return !e.denied
}

// natOutgoing says what the sending host's postrouting does to the flow.
func (e *explainer) natOutgoing() {
	src, f := e.in.Src, e.in.Flow
	if src.Iface == "" || e.in.SrcNode == nil {
		return
	}
	p := &e.in.SrcNode.Dataplane.Policy
	all := append(slices.Clone(p.AllPools), p.MasqueradePools...)
	if prefixesContain(all, f.Dst) {
		return // inside the pools: never masqueraded
	}
	for _, m := range p.MasqueradePools {
		if m.Contains(f.Src) {
			e.add(Step{Stage: StageNAT, Node: src.Node, Verdict: VerdictInfo,
				What: fmt.Sprintf("masquerade: pool %s has nat-outgoing and %s is outside every pool; the source becomes %s's address", m, f.Dst, src.Node)})
			return
		}
	}
	e.add(Step{Stage: StageNAT, Node: src.Node, Verdict: VerdictInfo,
		What: fmt.Sprintf("no nat-outgoing for %s: replies come back only if %s routes the pool to the cluster", f.Src, f.Dst)})
}

// route says how the sending host forwards the flow: false when it cannot.
func (e *explainer) route() bool {
	src, dst, f := e.in.Src, e.in.Dst, e.in.Flow
	if src.Node == "" || e.in.SrcNode == nil {
		if dst.Node != "" {
			e.add(Step{Stage: StageRoute, Verdict: VerdictInfo,
				What: fmt.Sprintf("from outside the cluster: needs a route to %s towards %s (not in the datastore)", f.Dst, dst.Node)})
		}
		return true
	}
	if src.Iface == "" && dst.Iface != "" && dst.Node == src.Node {
		return true // the host's own workload: the output path, below
	}
	r, ok := longestMatch(e.in.SrcNode.Dataplane.Routes, f.Dst)
	node := e.in.NodeAddrs[r.Gateway]
	via := r.Gateway.String()
	if node != "" {
		via += " (" + node + ")"
	}
	s := Step{Stage: StageRoute, Node: src.Node, Verdict: VerdictInfo}
	wg := e.in.SrcNode.Dataplane.WireGuard.Device
	switch {
	case !ok:
		s.What = "the host's own routes (no Calico route: outside every pool)"
	case r.Kind == RouteLocal:
		s.What = fmt.Sprintf("local: %s dev %s", r.Dst, r.Dev)
	case r.Kind == RouteBlackhole:
		s.Verdict, s.What = VerdictDrop, fmt.Sprintf("blackhole %s: an unassigned address of this host's own block", r.Dst)
	case r.Kind == RouteUnreachable:
		s.Verdict, s.What = VerdictDrop, fmt.Sprintf("unreachable %s: an IPIP pool and no working IPIP on %s", r.Dst, src.Node)
	case r.Dev == api.VXLANDevice:
		s.What = fmt.Sprintf("VXLAN: %s via %s dev %s", r.Dst, via, r.Dev)
	case r.Dev == IPIPKernelDevice || r.Dev == IPIPBPFDevice:
		// The device (tunl0, or ipip.calico without the kernel module)
		// depends on the node's kernel, which the datastore does not say.
		s.What = fmt.Sprintf("IPIP: %s via %s", r.Dst, via)
	case wg != "" && r.Dev == wg:
		s.What = fmt.Sprintf("WireGuard: %s via %s dev %s", r.Dst, via, r.Dev)
	default:
		s.What = fmt.Sprintf("BGP route: %s via %s", r.Dst, via)
	}
	e.add(s)
	return s.Verdict != VerdictDrop
}

// longestMatch finds the route the kernel would pick among ours.
func longestMatch(routes []Route, dst netip.Addr) (Route, bool) {
	best, found := Route{}, false
	for _, r := range routes {
		if r.Dst.Contains(dst) && (!found || r.Dst.Bits() > best.Dst.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

func (p *Policy) endpoint(iface string) *EndpointPolicy {
	for i := range p.Endpoints {
		if p.Endpoints[i].Interface == iface {
			return &p.Endpoints[i]
		}
	}
	return nil
}

// blocks says whether the control-plane guard drops a new flow.
func (cp ControlPlane) blocks(f Flow) bool {
	hosts := cp.Hosts.V4
	if f.Dst.Is6() {
		hosts = cp.Hosts.V6
	}
	if !slices.Contains(hosts, f.Dst) {
		return false
	}
	return slices.Contains(cp.Ports, L4Port{Proto: ProtoName(f.Proto), Port: f.Port})
}

func publishedFor(pubs []Published, f Flow) (Published, bool) {
	for _, p := range pubs {
		if ProtoName(f.Proto) == p.Proto && p.HostPort == f.Port && (!p.HostIP.IsValid() || p.HostIP == f.Dst) {
			return p, true
		}
	}
	return Published{}, false
}

// walk follows one endpoint's chain for one direction, as endpointPolicyRules
// and renderEndpoint lay it out, and returns the steps up to the decision.
func (p *Policy) walk(ep *EndpointPolicy, ingress bool, f Flow) []Step {
	stage, pdir, dir, pols := StageEgress, "egress", "outbound", ep.EgressPolicies
	if ingress {
		stage, pdir, dir, pols = StageIngress, "ingress", "inbound", ep.IngressPolicies
	}
	var steps []Step
	if len(pols) > 0 {
		passed := false
	tier:
		for _, name := range pols {
			tp := p.Policies[name]
			rs := tp.Egress
			if ingress {
				rs = tp.Ingress
			}
			for i, r := range rs {
				if !p.policyRuleMatches(r, f) {
					continue
				}
				s := Step{Stage: stage, What: fmt.Sprintf("policy %s %s rule %d", name, pdir, i+1), Rule: FormatPolicyRule(r)}
				switch r.Action {
				case resource.ActionAllow:
					s.Verdict = VerdictAccept
					return append(steps, s)
				case resource.ActionLog:
					s.Verdict = VerdictLog
					steps = append(steps, s)
					continue
				case resource.ActionPass:
					s.Verdict = VerdictPass
					steps = append(steps, s)
					passed = true
					break tier
				}
				s.Verdict = VerdictDrop
				return append(steps, s)
			}
			steps = append(steps, Step{Stage: stage, Verdict: VerdictNext, What: fmt.Sprintf("policy %s %s: no rule decided", name, pdir)})
		}
		if !passed {
			return append(steps, Step{Stage: stage, Verdict: VerdictDrop,
				What: fmt.Sprintf("end of tier: policies apply to %s %s and none allowed or passed", ep.Interface, pdir)})
		}
	}
	if len(ep.Profiles) == 0 {
		return append(steps, Step{Stage: stage, Verdict: VerdictDrop, What: "no profile: drop"})
	}
	for _, name := range ep.Profiles {
		prof, ok := p.Profiles[name]
		if !ok {
			return append(steps, Step{Stage: stage, Verdict: VerdictDrop, What: fmt.Sprintf("profile %s is missing: the rest is dropped", name)})
		}
		rs := prof.Outbound
		if ingress {
			rs = prof.Inbound
		}
		for i, r := range rs {
			s := Step{Stage: stage, What: fmt.Sprintf("profile %s %s rule %d", name, dir, i+1), Rule: rules.Format(r)}
			if err := api.ValidateRule(r); err != nil {
				s.Verdict, s.What = VerdictDrop, s.What+" does not parse, enforced as drop"
				return append(steps, s)
			}
			if !p.profileRuleMatches(r, f) {
				continue
			}
			s.Verdict = VerdictAccept
			if r.Action == api.ActionDeny {
				s.Verdict = VerdictDrop
			}
			return append(steps, s)
		}
		steps = append(steps, Step{Stage: stage, Verdict: VerdictNext, What: fmt.Sprintf("profile %s %s: no rule decided, on to the next profile", name, dir)})
	}
	return append(steps, Step{Stage: stage, Verdict: VerdictDrop, What: "no profile allowed it: drop"})
}

// profileRuleMatches is what renderRule's nft rules match.
func (p *Policy) profileRuleMatches(r api.Rule, f Flow) bool {
	switch r.Protocol {
	case api.ProtocolTCP:
		if f.Proto != ProtoTCP {
			return false
		}
	case api.ProtocolUDP:
		if f.Proto != ProtoUDP {
			return false
		}
	case api.ProtocolICMP:
		if f.Proto != ProtoICMP || !f.Src.Is4() {
			return false
		}
	case api.ProtocolICMPv6:
		if f.Proto != ProtoICMPv6 || f.Src.Is4() {
			return false
		}
	}
	if r.ICMPType != nil && f.ICMPType != *r.ICMPType || r.ICMPCode != nil && f.ICMPCode != *r.ICMPCode {
		return false
	}
	for i, e := range []api.EntityMatch{r.Src, r.Dst} {
		addr, port := f.Src, f.SrcPort
		if i == 1 {
			addr, port = f.Dst, f.Port
		}
		if e.CIDR != "" {
			c, err := api.ParseCIDR(e.CIDR)
			if err != nil || !c.Contains(addr) {
				return false
			}
		}
		if e.Tag != "" {
			members := p.TagMembers[e.Tag].V4
			if addr.Is6() {
				members = p.TagMembers[e.Tag].V6
			}
			if !slices.Contains(members, addr) {
				return false
			}
		}
		if len(e.Ports) > 0 && !inPorts(e.Ports, port) {
			return false
		}
	}
	return true
}

// policyRuleMatches is what policyRuleText's nft rules match.
func (p *Policy) policyRuleMatches(r PolicyRule, f Flow) bool {
	switch {
	case r.IPVersion == 4 && !f.Src.Is4(), r.IPVersion == 6 && f.Src.Is4():
		return false
	case r.Protocol != 0 && r.Protocol != f.Proto, r.NotProtocol != 0 && r.NotProtocol == f.Proto:
		return false
	}
	// An icmp (icmpv6, for protocol 58) type match implies that protocol.
	icmpFlow := f.Proto == ProtoICMP
	if r.Protocol == ProtoICMPv6 {
		icmpFlow = f.Proto == ProtoICMPv6
	}
	if m := r.ICMP; m != nil && (!icmpFlow || m.Type != f.ICMPType || m.Code != nil && *m.Code != f.ICMPCode) {
		return false
	}
	if m := r.NotICMP; m != nil && (!icmpFlow || m.Type == f.ICMPType && (m.Code == nil || *m.Code == f.ICMPCode)) {
		return false
	}
	ported := f.Proto == ProtoTCP || f.Proto == ProtoUDP
	for i, e := range []PolicyEntity{r.Src, r.Dst} {
		addr, port := f.Src, f.SrcPort
		if i == 1 {
			addr, port = f.Dst, f.Port
		}
		if len(e.Nets) > 0 && !prefixesContain(e.Nets, addr) || prefixesContain(e.NotNets, addr) {
			return false
		}
		if e.Selector != "" && !p.selects(e.Selector, addr) || e.NotSelector != "" && p.selects(e.NotSelector, addr) {
			return false
		}
		if len(e.Ports) > 0 && (!ported || !inPorts(e.Ports, port)) || len(e.NotPorts) > 0 && (!ported || inPorts(e.NotPorts, port)) {
			return false
		}
	}
	return true
}

func (p *Policy) selects(sel string, a netip.Addr) bool {
	m := p.SelectorMembers[sel]
	ps := m.V4
	if a.Is6() {
		ps = m.V6
	}
	return prefixesContain(ps, a)
}

func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a) })
}

func inPorts(rs []api.PortRange, port uint16) bool {
	return slices.ContainsFunc(rs, func(r api.PortRange) bool { return port != 0 && r.Min <= port && port <= r.Max })
}

// ProtoName is a Flow's protocol as rules write it.
func ProtoName(n uint8) string {
	switch n {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoICMPv6:
		return "icmpv6"
	}
	return strconv.Itoa(int(n))
}

func joinAddrs(as []netip.Addr) string {
	if len(as) == 0 {
		return "no address"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// FormatPolicyRule writes a parsed policy rule as a one-line YAML flow
// mapping in the resource's field names, e.g.
// {action: Allow, protocol: TCP, destination: {ports: [8080]}}.
func FormatPolicyRule(r PolicyRule) string {
	f := []string{"action: " + r.Action}
	if r.IPVersion != 0 {
		f = append(f, "ipVersion: "+strconv.Itoa(r.IPVersion))
	}
	if r.Protocol != 0 {
		f = append(f, "protocol: "+policyProto(r.Protocol))
	}
	if r.NotProtocol != 0 {
		f = append(f, "notProtocol: "+policyProto(r.NotProtocol))
	}
	for _, x := range []struct {
		name string
		m    *ICMPMatch
	}{{"icmp", r.ICMP}, {"notICMP", r.NotICMP}} {
		if x.m == nil {
			continue
		}
		s := x.name + ": {type: " + strconv.Itoa(x.m.Type)
		if x.m.Code != nil {
			s += ", code: " + strconv.Itoa(*x.m.Code)
		}
		f = append(f, s+"}")
	}
	for _, x := range []struct {
		name string
		e    PolicyEntity
	}{{"source", r.Src}, {"destination", r.Dst}} {
		if s := formatEntity(x.e); s != "" {
			f = append(f, x.name+": {"+s+"}")
		}
	}
	return "{" + strings.Join(f, ", ") + "}"
}

func formatEntity(e PolicyEntity) string {
	var f []string
	nets := func(name string, ps []netip.Prefix) {
		if len(ps) == 0 {
			return
		}
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = p.String()
		}
		f = append(f, name+": ["+strings.Join(s, ", ")+"]")
	}
	nets("nets", e.Nets)
	nets("notNets", e.NotNets)
	if e.Selector != "" {
		f = append(f, "selector: "+strconv.Quote(e.Selector))
	}
	if e.NotSelector != "" {
		f = append(f, "notSelector: "+strconv.Quote(e.NotSelector))
	}
	if len(e.Ports) > 0 {
		f = append(f, "ports: ["+rules.FormatPorts(e.Ports)+"]")
	}
	if len(e.NotPorts) > 0 {
		f = append(f, "notPorts: ["+rules.FormatPorts(e.NotPorts)+"]")
	}
	return strings.Join(f, ", ")
}

func policyProto(n uint8) string {
	switch n {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "ICMPv6"
	case 132:
		return "SCTP"
	}
	return strconv.Itoa(int(n))
}
