package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/decode"
)

// WhyRequest is a question for Why: can Src open a flow to Dst?
type WhyRequest struct {
	// Src and Dst are each a workload (its name, or NODE/NAME when two
	// nodes have one of that name), an address, or "outside".
	Src, Dst string
	Proto    string // tcp, udp or icmp ("": icmp without a port, else tcp)
	Port     uint16 // the destination port of tcp and udp
}

// WhyAnswer is the verdict and how it was reached.
type WhyAnswer struct {
	calc.Explanation
	Src  calc.Party `json:"src"`
	Dst  calc.Party `json:"dst"`
	Flow calc.Flow  `json:"flow"`
	// Notes are what the answer assumes: how "outside" was read, records
	// the agents skip too.
	Notes []string `json:"notes,omitempty"`
}

// Outside stands for an address outside the cluster when a question says
// "outside": a documentation address (TEST-NET-3, and 2001:db8:: for IPv6),
// so it is in no pool, no node and, unless a rule names it, no rule's nets.
var (
	Outside4 = netip.MustParseAddr("203.0.113.1")
	Outside6 = netip.MustParseAddr("2001:db8::1")
)

// Model is the datastore at one revision, decoded as every agent decodes
// it (package decode) and computed per node with calc.Compute as that
// node's agent computes it: the structures the agents render into nftables
// and routes, not a second reading of the rules. One read answers any
// number of questions (a who-reaches-whom matrix); each node is computed
// once, on first use. Safe for concurrent use.
type Model struct {
	snap         *calc.Snapshot
	notes        []string
	controlHosts []netip.Addr
	controlPorts []uint16
	res          resolver
	nodeAddrs    map[netip.Addr]string
	learned      map[netip.Prefix][]calc.LearnedPath

	mu      sync.Mutex
	results map[string]*calc.Result
}

// ReadModel reads the whole datastore in one transaction and decodes it.
func (c *Client) ReadModel(ctx context.Context) (*Model, error) {
	recs, _, err := c.DS.Read(ctx, datastore.ReadPrefix(datastore.Root))
	if err != nil {
		return nil, err
	}
	kvs := make(map[string][]byte, len(recs[0]))
	for _, r := range recs[0] {
		v := r.Value
		if v == nil {
			v = []byte{} // stored empty, not deleted: the syncer keeps them apart too
		}
		kvs[r.Key] = v
	}
	return ModelOf(kvs, c.DS.Config()), nil
}

// ModelOf decodes datastore records (by key, as read or as a watch keeps
// them) into a Model; cfg is the datastore the agents use, whose hosts and
// ports they add to the control plane.
func ModelOf(kvs map[string][]byte, cfg datastore.Config) *Model {
	snap, errs := decode.Snapshot(nil, kvs)
	var notes []string
	for _, e := range errs {
		notes = append(notes, e.Error()+" (agents keep its last good value, which this answer cannot know)")
	}
	hosts, ports := cfg.ControlPlane()
	return NewModel(snap, hosts, ports, notes)
}

// Why answers one question from a fresh read of the datastore.
func (c *Client) Why(ctx context.Context, req WhyRequest) (*WhyAnswer, error) {
	m, err := c.ReadModel(ctx)
	if err != nil {
		return nil, err
	}
	return m.Why(req)
}

// NewModel prepares a decoded snapshot for questions. controlHosts and
// controlPorts are the datastore's hosts and ports, as agents add them to
// the control plane; notes go with every answer.
func NewModel(snap *calc.Snapshot, controlHosts []netip.Addr, controlPorts []uint16, notes []string) *Model {
	believed, ignored := calc.CheckEndpoints(snap)
	m := &Model{snap: snap, notes: notes, controlHosts: controlHosts, controlPorts: controlPorts,
		res:       resolver{snap: snap, believed: believed, ignored: ignored},
		nodeAddrs: map[netip.Addr]string{}, learned: map[netip.Prefix][]calc.LearnedPath{},
		results: map[string]*calc.Result{}}
	// Every node's routes reach the others over BGP with the node itself as
	// the next hop (a mesh, or reflectors, which keep the next hop).
	for _, name := range sortedNames(snap.Nodes) {
		v4, v6 := api.NodeAddrs(snap.Nodes[name])
		for _, a := range []netip.Addr{v4, v6} {
			if a.IsValid() {
				m.nodeAddrs[a] = name
			}
		}
		if !v4.IsValid() {
			continue
		}
		for _, p := range calc.Compute(calc.Input{Node: name, Snap: snap}).Announce {
			m.learned[p] = append(m.learned[p], calc.LearnedPath{Neighbor: v4, NextHop: v4})
		}
	}
	return m
}

// Workloads lists the workloads questions can name, by the key Why
// accepts (NODE/NAME), sorted: every workload's endpoint record, also those
// the agents ignore (Why then says why it reaches nothing).
func (m *Model) Workloads() []string {
	var out []string
	for _, key := range sortedNames(m.snap.Endpoints) {
		if m.snap.Endpoints[key].Workload != "" {
			out = append(out, key)
		}
	}
	return out
}

// node is Compute for one node as its agent runs it, with the routes the
// others announce; nil for "" (outside the cluster).
func (m *Model) node(name string) *calc.Result {
	if name == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.results[name]; ok {
		return r
	}
	r := calc.Compute(calc.Input{
		Node: name, Snap: m.snap, Learned: m.learned,
		// The eBPF IPIP path: the agent's kernel probe is not in the
		// datastore, and with the kernel module only the device differs.
		IPIP:         calc.IPIPSupport{BPF: true},
		ControlHosts: m.controlHosts, ControlTCPPorts: m.controlPorts,
		WireGuard: calc.WireGuardSupport{PublicKey: m.snap.Nodes[name].WireGuardPublicKey},
	})
	m.results[name] = &r
	return &r
}

// Why resolves both ends, builds the flow and explains it.
func (m *Model) Why(req WhyRequest) (*WhyAnswer, error) {
	ans := &WhyAnswer{Notes: slices.Clone(m.notes)}
	want6 := isV6(req.Src) || isV6(req.Dst)
	var err error
	if ans.Src, err = m.res.party(req.Src, want6, &ans.Notes); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if ans.Dst, err = m.res.party(req.Dst, want6, &ans.Notes); err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if ans.Src.Addr.Is4() != ans.Dst.Addr.Is4() {
		return nil, fmt.Errorf("%s (%s) and %s (%s) are of different IP families; give two IPv4 or two IPv6 ends", ans.Src.Name, ans.Src.Addr, ans.Dst.Name, ans.Dst.Addr)
	}
	if ans.Flow, err = flowFor(req, ans.Src.Addr, ans.Dst.Addr); err != nil {
		return nil, err
	}
	ans.Explanation = calc.Explain(calc.ExplainInput{
		Src: ans.Src, Dst: ans.Dst, Flow: ans.Flow,
		SrcNode: m.node(ans.Src.Node), DstNode: m.node(ans.Dst.Node),
		NodeAddrs: m.nodeAddrs,
	})
	return ans, nil
}

// FlowLine describes the flow asked about, as `calicoctl why` prints it
// under the verdict.
func (a *WhyAnswer) FlowLine() string {
	dst := a.Dst.Addr.String()
	if a.Flow.Proto == calc.ProtoTCP || a.Flow.Proto == calc.ProtoUDP {
		dst = fmt.Sprintf("%s:%d", dst, a.Flow.Port)
	}
	return fmt.Sprintf("%s %s (%s) -> %s (%s), a new flow (its replies pass as established)",
		calc.ProtoName(a.Flow.Proto), a.Src.Addr, a.Src.Name, dst, a.Dst.Name)
}

func flowFor(req WhyRequest, src, dst netip.Addr) (calc.Flow, error) {
	f := calc.Flow{Src: src, Dst: dst, Port: req.Port}
	proto := req.Proto
	if proto == "" {
		proto = "icmp"
		if req.Port != 0 {
			proto = "tcp"
		}
	}
	switch proto {
	case "tcp", "udp":
		f.Proto = calc.ProtoTCP
		if proto == "udp" {
			f.Proto = calc.ProtoUDP
		}
		if req.Port == 0 {
			return f, fmt.Errorf("--proto %s needs --port N (1-65535)", proto)
		}
	case "icmp":
		if req.Port != 0 {
			return f, errors.New("--port goes with --proto tcp or udp, not icmp")
		}
		// An echo request, as ping sends.
		f.Proto, f.ICMPType = calc.ProtoICMP, 8
		if src.Is6() {
			f.Proto, f.ICMPType = calc.ProtoICMPv6, 128
		}
	default:
		return f, fmt.Errorf("--proto %q: want tcp, udp or icmp", req.Proto)
	}
	return f, nil
}

func isV6(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6()
}

type resolver struct {
	snap     *calc.Snapshot
	believed map[string]api.Endpoint
	ignored  []calc.IgnoredEndpoint
}

// party resolves one end of the question.
func (r resolver) party(given string, want6 bool, notes *[]string) (calc.Party, error) {
	if given == "outside" {
		a := Outside4
		if want6 {
			a = Outside6
		}
		*notes = append(*notes, fmt.Sprintf("outside is taken as %s; give an address to ask about a particular one", a))
		return calc.Party{Name: "outside", Addr: a}, nil
	}
	if a, err := netip.ParseAddr(given); err == nil {
		a = a.Unmap()
		for _, key := range sortedNames(r.believed) {
			ep := r.believed[key]
			if addrs, _ := endpointAddrs(ep); slices.Contains(addrs, a) {
				return calc.Party{Name: key, Addr: a, Node: ep.Node, Iface: ep.InterfaceName}, nil
			}
		}
		for _, name := range sortedNames(r.snap.Nodes) {
			v4, v6 := api.NodeAddrs(r.snap.Nodes[name])
			if a == v4 || a == v6 {
				return calc.Party{Name: name, Addr: a, Node: name}, nil
			}
		}
		return calc.Party{Name: a.String(), Addr: a}, nil
	}
	var keys []string
	if strings.Contains(given, "/") {
		keys = []string{given}
	} else {
		for _, key := range sortedNames(r.snap.Endpoints) {
			if r.snap.Endpoints[key].Workload == given {
				keys = append(keys, key)
			}
		}
	}
	switch {
	case len(keys) == 0 || r.snap.Endpoints[keys[0]].Workload == "":
		return calc.Party{}, fmt.Errorf("no workload %q in the datastore; give a workload name as `calicoctl container add` made it (NODE/NAME when two nodes have one), an address, or outside", given)
	case len(keys) > 1:
		return calc.Party{}, fmt.Errorf("workload %q is on more than one node (%s); give NODE/%s", given, strings.Join(keys, ", "), given)
	}
	key := keys[0]
	ep, ok := r.believed[key]
	if !ok {
		for _, ig := range r.ignored {
			if ig.Key == key {
				return calc.Party{}, fmt.Errorf("workload %s: every agent ignores its endpoint record (%s), so it reaches nothing and nothing reaches it", key, ig.Reason)
			}
		}
		return calc.Party{}, fmt.Errorf("workload %s: its endpoint record is not believed", key)
	}
	addrs, err := endpointAddrs(ep)
	if err != nil {
		return calc.Party{}, err
	}
	for _, a := range addrs {
		if a.Is6() == want6 {
			return calc.Party{Name: key, Addr: a, Node: ep.Node, Iface: ep.InterfaceName}, nil
		}
	}
	fam := "IPv4"
	if want6 {
		fam = "IPv6"
	}
	return calc.Party{}, fmt.Errorf("workload %s has no %s address", key, fam)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
