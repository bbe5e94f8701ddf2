package ui

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/rules"
)

// View is what the page shows, built from the datastore's records alone (no
// kernel, no agent is asked): one pure function of the records and the time,
// so the page, the live updates and the tests all see the same thing.
type View struct {
	Hosts     []Host
	Pools     []Pool
	Workloads []Workload
	Profiles  []Profile
	Policies  []Policy
	// Problems are records the view could not read; they are shown, not
	// skipped, so a corrupt record is noticed.
	Problems []string
}

// Host is a node with its agent's last report.
type Host struct {
	Name, IPv4, IPv6 string
	AS               string
	RouteReflector   bool
	// State is api.NodeStatus.State, or "unknown" before the first report;
	// Health is its CSS class: ok, warn or bad.
	State, Health string
	Reported      string // when the agent last reported (RFC 3339), or ""
	Endpoints     int
	Problems      []string
	IPIP          string
	WireGuard     string
	Peers         []api.PeerState // BGP sessions as the agent sees them
	Blocks        []string        // CIDRs of blocks affine to this host
}

// Pool is an IP pool with the blocks carved from it.
type Pool struct {
	api.Pool
	Encap  string
	Blocks []Block
}

// Block is an IPAM block: who owns it and how full it is.
type Block struct {
	CIDR, Affinity string
	Used, Size     int
}

// Workload is an endpoint as selectors and people see it.
type Workload struct {
	Node, Name, Orchestrator, Interface string
	Addrs                               []string
	Labels                              []Label
	Profiles                            []ProfileRef
}

// ID names a workload uniquely: workload names are unique per node only.
func (w Workload) ID() string { return w.Node + "/" + w.Name }

// Label is one effective label; Implicit ones are set by the system.
type Label struct {
	Key, Value string
	Implicit   bool
}

// ProfileRef is a profile an endpoint names; Missing when no such profile
// exists (the agent then applies nothing for it).
type ProfileRef struct {
	Name    string
	Missing bool
}

// Profile is a seed-style profile with its rules printed in the CLI's grammar.
type Profile struct {
	Name              string
	Tags              []string
	Inbound, Outbound []string
	Members           []string // workload IDs that carry the profile
}

// Policy is a v3 GlobalNetworkPolicy in brief: which endpoints it selects
// and how many rules it has (the rules themselves are `calicoctl get`'s).
type Policy struct {
	Name, Order, Selector string
	Types                 []string
	Ingress, Egress       int
}

// Summary is the line at the top of the page.
func (v View) Summary() string {
	ready := 0
	for _, h := range v.Hosts {
		if h.Health == "ok" {
			ready++
		}
	}
	return fmt.Sprintf("%s (%d ready), %s, %s, %s, %s", plural(len(v.Hosts), "host"), ready,
		plural(len(v.Pools), "pool"), plural(len(v.Workloads), "workload"),
		plural(len(v.Profiles), "profile"), plural(len(v.Policies), "policy"))
}

func plural(n int, what string) string {
	switch {
	case n == 1:
		return "1 " + what
	case strings.HasSuffix(what, "y"):
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(what, "y"))
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// records is the raw datastore content the view is built from, by key.
type records map[string][]byte

// build decodes the records into a View. now judges the agents' health.
func build(recs records, now time.Time) View {
	var v View
	d := decoded{
		nodes:    map[string]api.Node{},
		status:   map[string]api.NodeStatus{},
		peers:    map[string][]api.BGPPeer{},
		bgp:      api.DefaultBGPConfig(),
		profiles: map[string]api.Profile{},
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := d.add(k, recs[k]); err != nil {
			v.Problems = append(v.Problems, fmt.Sprintf("%s: %v", k, err))
		}
	}
	v.Hosts = d.hosts(now)
	v.Pools = d.pools()
	v.Workloads = d.workloads()
	v.Profiles = d.profileList(v.Workloads)
	v.Policies = d.policyList()
	return v
}

// decoded holds the records the view uses, decoded.
type decoded struct {
	nodes     map[string]api.Node
	status    map[string]api.NodeStatus
	peers     map[string][]api.BGPPeer // configured per-node peers, by node
	bgp       api.BGPConfig
	poolList  []api.Pool
	blocks    []api.Block
	endpoints []api.Endpoint
	profiles  map[string]api.Profile
	policies  []resource.GlobalNetworkPolicy
}

// add decodes one record if the view uses it.
func (d *decoded) add(key string, val []byte) error {
	switch {
	case key == datastore.KeyBGPConfig:
		return json.Unmarshal(val, &d.bgp)
	case strings.HasPrefix(key, datastore.PrefixPools):
		return decodeAppend(val, &d.poolList)
	case strings.HasPrefix(key, datastore.PrefixBlocks):
		return decodeAppend(val, &d.blocks)
	case strings.HasPrefix(key, datastore.PrefixProfiles):
		var p api.Profile
		if err := json.Unmarshal(val, &p); err != nil {
			return err
		}
		d.profiles[p.Name] = p
	case strings.HasPrefix(key, datastore.PrefixPolicies):
		return decodeAppend(val, &d.policies)
	case strings.HasPrefix(key, datastore.PrefixStatus):
		var st api.NodeStatus
		if err := json.Unmarshal(val, &st); err != nil {
			return err
		}
		d.status[st.Node] = st
	case datastore.IsNodeKey(key):
		var n api.Node
		if err := json.Unmarshal(val, &n); err != nil {
			return err
		}
		d.nodes[n.Name] = n
	case strings.HasPrefix(key, datastore.PrefixHosts):
		rest := strings.TrimPrefix(key, datastore.PrefixHosts)
		node, tail, _ := strings.Cut(rest, "/")
		switch {
		case strings.HasPrefix(tail, "endpoint/"):
			return decodeAppend(val, &d.endpoints)
		case strings.HasPrefix(tail, "bgp/peer/"):
			var p api.BGPPeer
			if err := json.Unmarshal(val, &p); err != nil {
				return err
			}
			d.peers[node] = append(d.peers[node], p)
		}
	}
	return nil
}

func decodeAppend[T any](val []byte, to *[]T) error {
	var x T
	if err := json.Unmarshal(val, &x); err != nil {
		return err
	}
	*to = append(*to, x)
	return nil
}

func (d *decoded) hosts(now time.Time) []Host {
	affine := map[string][]string{}
	for _, b := range d.blocks {
		if b.Affinity != "" {
			affine[b.Affinity] = append(affine[b.Affinity], b.CIDR)
		}
	}
	names := map[string]bool{}
	for n := range d.nodes {
		names[n] = true
	}
	// A status without a node record is a host that was removed while its
	// agent still runs: show it, it is something to clean up.
	for n := range d.status {
		names[n] = true
	}
	var out []Host
	for name := range names {
		n := d.nodes[name]
		h := Host{Name: name, IPv4: n.IPv4, IPv6: n.IPv6, RouteReflector: n.RouteReflector,
			AS: strconv.FormatUint(uint64(n.ASNumber), 10), State: "unknown", Health: "bad"}
		if n.ASNumber == 0 {
			h.AS = fmt.Sprintf("%d (default)", d.bgp.DefaultASNumber)
		}
		if _, ok := d.nodes[name]; !ok {
			h.Problems = append(h.Problems, "no node record: removed, but its agent still reports")
		}
		if st, ok := d.status[name]; ok {
			h.State = st.State(now)
			h.Health = health(h.State)
			h.Reported, h.Endpoints, h.IPIP = st.Updated, st.Endpoints, st.IPIP
			h.Problems = append(h.Problems, st.Problems...)
			h.Peers = st.BGPPeers
			if wg := st.WireGuard; wg != nil {
				h.WireGuard = fmt.Sprintf("%s %s, %d peers", wg.Mode, wg.Device, len(wg.Peers))
			}
		}
		h.Blocks = sortedCIDRs(affine[name])
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// health maps an agent state to how the page colours it.
func health(state string) string {
	switch state {
	case "ready":
		return "ok"
	case "down":
		return "bad"
	}
	return "warn"
}

func (d *decoded) pools() []Pool {
	var out []Pool
	used := map[string]bool{}
	for _, p := range d.poolList {
		pool := Pool{Pool: p, Encap: encap(p)}
		prefix, err := netip.ParsePrefix(p.CIDR)
		for _, b := range d.blocks {
			bp, berr := netip.ParsePrefix(b.CIDR)
			if err != nil || berr != nil || !prefix.Overlaps(bp) {
				continue
			}
			pool.Blocks = append(pool.Blocks, toBlock(b, bp))
			used[b.CIDR] = true
		}
		sortBlocks(pool.Blocks)
		out = append(out, pool)
	}
	sort.Slice(out, func(i, j int) bool { return comparePrefixes(out[i].CIDR, out[j].CIDR) < 0 })
	// Blocks of a pool that was removed still hold addresses until released.
	var orphans []Block
	for _, b := range d.blocks {
		if !used[b.CIDR] {
			bp, _ := netip.ParsePrefix(b.CIDR)
			orphans = append(orphans, toBlock(b, bp))
		}
	}
	if len(orphans) > 0 {
		sortBlocks(orphans)
		out = append(out, Pool{Pool: api.Pool{CIDR: "(no pool)"}, Encap: "-", Blocks: orphans})
	}
	return out
}

func encap(p api.Pool) string {
	var e []string
	if p.IPIPMode != "" && p.IPIPMode != api.EncapNever {
		e = append(e, "IPIP "+string(p.IPIPMode))
	}
	if p.VXLANMode != "" && p.VXLANMode != api.EncapNever {
		e = append(e, "VXLAN "+string(p.VXLANMode))
	}
	if len(e) == 0 {
		return "none"
	}
	return strings.Join(e, ", ")
}

func toBlock(b api.Block, p netip.Prefix) Block {
	size := 0
	if p.IsValid() && p.Addr().BitLen()-p.Bits() < 31 {
		size = 1 << (p.Addr().BitLen() - p.Bits())
	}
	aff := b.Affinity
	if aff == "" {
		aff = "(released)"
	}
	return Block{CIDR: b.CIDR, Affinity: aff, Used: len(b.Allocations), Size: size}
}

func sortBlocks(bs []Block) {
	sort.Slice(bs, func(i, j int) bool { return comparePrefixes(bs[i].CIDR, bs[j].CIDR) < 0 })
}

func sortedCIDRs(cs []string) []string {
	slices.SortFunc(cs, comparePrefixes)
	return cs
}

// comparePrefixes orders CIDRs by address (so .64/26 comes before .128/26),
// with unparsable ones last in text order.
func comparePrefixes(a, b string) int {
	pa, ea := netip.ParsePrefix(a)
	pb, eb := netip.ParsePrefix(b)
	switch {
	case ea != nil || eb != nil:
		if (ea == nil) != (eb == nil) {
			if ea == nil {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	case pa.Addr() != pb.Addr():
		return pa.Addr().Compare(pb.Addr())
	}
	return pa.Bits() - pb.Bits()
}

func (d *decoded) workloads() []Workload {
	var out []Workload
	for _, ep := range d.endpoints {
		w := Workload{Node: ep.Node, Name: ep.Workload, Orchestrator: ep.Orchestrator, Interface: ep.InterfaceName}
		w.Addrs = append(append(w.Addrs, ep.IPv4Nets...), ep.IPv6Nets...)
		for k, v := range ep.EffectiveLabels() {
			w.Labels = append(w.Labels, Label{Key: k, Value: v, Implicit: api.IsImplicitLabel(k)})
		}
		// The workload's own labels first, then the system's, each by key.
		sort.Slice(w.Labels, func(i, j int) bool {
			a, b := w.Labels[i], w.Labels[j]
			if a.Implicit != b.Implicit {
				return !a.Implicit
			}
			return a.Key < b.Key
		})
		for _, p := range ep.Profiles {
			_, ok := d.profiles[p]
			w.Profiles = append(w.Profiles, ProfileRef{Name: p, Missing: !ok})
		}
		out = append(out, w)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID() < out[j].ID() })
	return out
}

func (d *decoded) profileList(ws []Workload) []Profile {
	members := map[string][]string{}
	for _, w := range ws {
		for _, p := range w.Profiles {
			members[p.Name] = append(members[p.Name], w.ID())
		}
	}
	var out []Profile
	for _, p := range d.profiles {
		pr := Profile{Name: p.Name, Tags: p.Tags, Members: members[p.Name]}
		for _, r := range p.Inbound {
			pr.Inbound = append(pr.Inbound, rules.Format(r))
		}
		for _, r := range p.Outbound {
			pr.Outbound = append(pr.Outbound, rules.Format(r))
		}
		out = append(out, pr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *decoded) policyList() []Policy {
	order := func(p resource.GlobalNetworkPolicy) float64 {
		if p.Spec.Order == nil {
			return math.Inf(1)
		}
		return *p.Spec.Order
	}
	// The order the dataplane applies them in: by order (none last), then name.
	ps := slices.Clone(d.policies)
	sort.Slice(ps, func(i, j int) bool {
		if oi, oj := order(ps[i]), order(ps[j]); oi != oj {
			return oi < oj
		}
		return ps[i].Metadata.Name < ps[j].Metadata.Name
	})
	var out []Policy
	for _, p := range ps {
		sp := p.Spec
		pol := Policy{Name: p.Metadata.Name, Order: "-", Selector: sp.Selector, Types: sp.Types,
			Ingress: len(sp.Ingress), Egress: len(sp.Egress)}
		if sp.Order != nil {
			pol.Order = strconv.FormatFloat(*sp.Order, 'g', -1, 64)
		}
		if pol.Selector == "" {
			pol.Selector = "all()"
		}
		out = append(out, pol)
	}
	return out
}
