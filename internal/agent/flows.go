package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nflog"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/calico-go/calico/internal/rules"
	"golang.org/x/sys/unix"
)

// Bounds of the denied-flow log: a workload that sends many kinds of denied
// packets only replaces its own oldest entries, and the whole log (also
// what the status record carries) stays small.
const (
	flowsPerWorkload = 8
	flowsMax         = 64
)

// flowLog collects the packets our policy drops (logged by nft to
// nft.DropLogGroup) into DeniedFlows for `calicoctl flows`.
type flowLog struct {
	mu    sync.Mutex
	names nft.DropNames
	// eps are this host's endpoints by address; profiles hold the rules
	// a drop's rule number names.
	eps      map[netip.Addr]flowEndpoint
	profiles map[string]api.Profile
	policies map[string]calc.TierPolicy
	flows    map[flowKey]*api.DeniedFlow
	seen     map[flowKey]time.Time
	// pending is the policy last set, until resolve makes the tables
	// above from it and workloads (interface -> workload).
	pending   *calc.Policy
	workloads []calc.WorkloadIface
}

type flowEndpoint struct {
	workload string
	profiles []string
	// in and out are the label policies that apply, in order.
	in, out []string
}

type flowKey struct {
	workload, dir   string
	src, dst, proto string
	port            int
	profile, policy string
	rule            int
	endOfTier       bool
}

func newFlowLog() *flowLog {
	return &flowLog{flows: map[flowKey]*api.DeniedFlow{}, seen: map[flowKey]time.Time{}}
}

// setPolicy tells the log what the enforced policy means: which chain is
// which profile, which address which workload. The tables themselves are
// made when a denied packet first needs them (resolve): at 1000 endpoints
// making them on every pass was a fifth of the cost of a new workload,
// and most passes see no denied packet before the next one.
func (f *flowLog) setPolicy(p calc.Policy, workloads []calc.WorkloadIface) {
	// The workload of each interface is calc's pairing of this host's
	// believed endpoints (Dataplane.Workloads, which calc copies before it
	// changes, so it can be kept): reading every record of the cluster's
	// snapshot for it here cost 0.4 ms per new container at 1000
	// endpoints (36 of 387 perf samples of the endpoint pass).
	f.mu.Lock()
	f.pending, f.workloads = &p, workloads
	f.mu.Unlock()
}

// resolve makes the tables of the policy setPolicy was last given, if
// not made yet. f.mu is held.
func (f *flowLog) resolve() {
	if f.pending == nil {
		return
	}
	p := *f.pending
	byIface := make(map[string]string, len(f.workloads))
	for _, w := range f.workloads {
		byIface[w.Interface] = w.Workload
	}
	eps := map[netip.Addr]flowEndpoint{}
	for _, ep := range p.Endpoints {
		fe := flowEndpoint{workload: byIface[ep.Interface], profiles: ep.Profiles, in: ep.IngressPolicies, out: ep.EgressPolicies}
		if fe.workload == "" {
			fe.workload = ep.Interface
		}
		for _, a := range ep.Addrs {
			eps[a] = fe
		}
	}
	f.names, f.eps, f.profiles, f.policies = nft.NewDropNames(p), eps, p.Profiles, p.Policies
	f.pending, f.workloads = nil, nil
}

// runLogged reads the drop log until ctx ends. If the group cannot be read
// (a previous agent of this host still holds it), it says so and tries
// again every few seconds.
func (f *flowLog) runLogged(ctx context.Context, log *slog.Logger) {
	warned := false
	for ctx.Err() == nil {
		err := nflog.Listen(ctx, nft.DropLogGroup, nft.DropSnapLen, f.add)
		if err == nil {
			return
		}
		if !warned {
			log.Warn("denied flows are not recorded until the drop log can be read; retrying", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

func (f *flowLog) add(p nflog.Packet) {
	h, ok := parseHeaders(p.Family, p.Payload)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolve()
	src, ok := f.names.Source(p.Prefix)
	if !ok {
		return
	}
	wlAddr := h.dst
	if src.Direction == "outbound" {
		wlAddr = h.src
	}
	ep, ok := f.eps[wlAddr]
	if !ok {
		return
	}
	k := flowKey{workload: ep.workload, dir: src.Direction, src: h.src.String(), dst: h.dst.String(),
		proto: h.proto, port: h.port, profile: src.Profile, policy: src.Policy, rule: src.Rule, endOfTier: src.EndOfTier}
	fl := f.flows[k]
	if fl == nil {
		fl = &api.DeniedFlow{Workload: k.workload, Direction: k.dir, Source: k.src, Destination: k.dst,
			Protocol: k.proto, Port: k.port, Profile: k.profile, Policy: k.policy, Rule: k.rule, DeniedBy: f.deniedBy(src, ep)}
		if k.rule == 0 && !k.endOfTier {
			fl.Profile = strings.Join(ep.profiles, ",")
		}
		f.flows[k] = fl
		f.evict(k)
	}
	fl.Packets++
	f.seen[k] = p.Time
	fl.LastSeen = p.Time.UTC().Format(time.RFC3339)
}

// deniedBy says in words what dropped the packet.
func (f *flowLog) deniedBy(s nft.DropSource, ep flowEndpoint) string {
	if s.EndOfTier {
		pols := ep.in
		if s.Direction == "outbound" {
			pols = ep.out
		}
		return fmt.Sprintf("label policies %s apply and none decided: end of tier", strings.Join(pols, ", "))
	}
	if s.Policy != "" {
		text := ""
		if pol, ok := f.policies[s.Policy]; ok {
			rs := pol.Ingress
			if s.Direction == "outbound" {
				rs = pol.Egress
			}
			if s.Rule >= 1 && s.Rule <= len(rs) {
				text = ": " + calc.FormatPolicyRule(rs[s.Rule-1])
			}
		}
		return fmt.Sprintf("policy %s %s rule %d%s", s.Policy, s.Direction, s.Rule, text)
	}
	if s.Rule == 0 {
		if len(ep.profiles) == 0 {
			return "the workload has no profile: nothing is allowed"
		}
		return fmt.Sprintf("no %s rule of profile %s allows it", s.Direction, strings.Join(ep.profiles, ", "))
	}
	text := ""
	if prof, ok := f.profiles[s.Profile]; ok {
		rs := prof.Inbound
		if s.Direction == "outbound" {
			rs = prof.Outbound
		}
		if s.Rule <= len(rs) {
			text = ": " + rules.Format(rs[s.Rule-1])
		}
	}
	return fmt.Sprintf("profile %s %s rule %d%s", s.Profile, s.Direction, s.Rule, text)
}

// evict keeps the bounds after k was added: the oldest of k's workload
// beyond flowsPerWorkload, then the oldest overall beyond flowsMax.
func (f *flowLog) evict(k flowKey) {
	oldest := func(match func(flowKey) bool) (flowKey, int) {
		var o flowKey
		n := 0
		for x := range f.flows {
			if !match(x) || x == k {
				continue
			}
			if n++; n == 1 || f.seen[x].Before(f.seen[o]) {
				o = x
			}
		}
		return o, n
	}
	if o, n := oldest(func(x flowKey) bool { return x.workload == k.workload }); n >= flowsPerWorkload {
		delete(f.flows, o)
		delete(f.seen, o)
	}
	if len(f.flows) > flowsMax {
		o, _ := oldest(func(flowKey) bool { return true })
		delete(f.flows, o)
		delete(f.seen, o)
	}
}

// list is the log, newest first.
func (f *flowLog) list() []api.DeniedFlow {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]api.DeniedFlow, 0, len(f.flows))
	for _, fl := range f.flows {
		out = append(out, *fl)
	}
	slices.SortFunc(out, func(a, b api.DeniedFlow) int {
		if c := strings.Compare(b.LastSeen, a.LastSeen); c != 0 {
			return c
		}
		return strings.Compare(a.Workload+a.Source+a.Destination, b.Workload+b.Source+b.Destination)
	})
	return out
}

// headers are what a flow is told by.
type headers struct {
	src, dst netip.Addr
	proto    string
	port     int
}

// parseHeaders reads the IP header and the start of the transport header.
func parseHeaders(family uint8, b []byte) (headers, bool) {
	var h headers
	var l4 []byte
	var proto byte
	switch {
	case family == unix.AF_INET && len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0x0f) * 4
		h.src, h.dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		proto = b[9]
		if len(b) >= ihl {
			l4 = b[ihl:]
		}
	case family == unix.AF_INET6 && len(b) >= 40 && b[0]>>4 == 6:
		h.src, h.dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		proto = b[6] // extension headers are reported as their own number
		l4 = b[40:]
	default:
		return h, false
	}
	switch proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		h.proto = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[proto]
		if len(l4) >= 4 {
			h.port = int(l4[2])<<8 | int(l4[3])
		}
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		h.proto = map[byte]string{unix.IPPROTO_ICMP: "icmp", unix.IPPROTO_ICMPV6: "icmpv6"}[proto]
		if len(l4) >= 1 {
			h.port = int(l4[0])
		}
	default:
		h.proto = strconv.Itoa(int(proto))
	}
	return h, true
}

// flowKinds is flows without their counts and times: what changes when a
// new kind of packet is denied.
func flowKinds(flows []api.DeniedFlow) []api.DeniedFlow {
	if flows == nil {
		return nil
	}
	out := make([]api.DeniedFlow, len(flows))
	for i, f := range flows {
		f.Packets, f.LastSeen = 0, ""
		out[i] = f
	}
	slices.SortFunc(out, func(a, b api.DeniedFlow) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	return out
}
