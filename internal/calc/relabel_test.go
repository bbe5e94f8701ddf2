package calc

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
)

// relabelWorld is LabelPolicySnapshot plus what a label change can meet
// besides: endpoints of another host, egress policies, a policy no
// endpoint matches yet, a network set holding an endpoint's address, and
// a record Compute does not believe.
func relabelWorld() *Snapshot {
	s := LabelPolicySnapshot(60, 30)
	s.Nodes["h1"] = api.Node{Name: "h1", IPv4: "10.0.0.2/24"}
	for i := range 20 {
		s.Endpoints[fmt.Sprintf("h1/r%d", i)] = api.Endpoint{Node: "h1", Workload: fmt.Sprintf("r%d", i),
			IPv4Nets: []string{fmt.Sprintf("10.65.0.%d/32", i+1)}, IPv6Nets: []string{fmt.Sprintf("fd00::%x/128", i+1)},
			Profiles: []string{"P"}, Labels: map[string]string{"app": fmt.Sprintf("a%d", i%7)}}
	}
	honest(s)
	// Lies about its address: ignored, whatever its labels.
	s.Endpoints["h0/liar"] = api.Endpoint{Node: "h0", Workload: "liar", InterfaceName: api.WorkloadIfaceName("h0", "liar"),
		IPv4Nets: []string{"10.64.0.1/32"}, Profiles: []string{"P"}, Labels: map[string]string{"app": "a1"}}
	addTierPolicies(s)
	return s
}

// addTierPolicies adds two label policies (one selecting by a tier label
// in both directions, one selecting nothing yet) and a network set, and
// gives some endpoints a tier, so egress-db is in use from the start.
func addTierPolicies(s *Snapshot) {
	order := 5.5
	s.Policies["egress-db"] = resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: "egress-db"}, Spec: resource.GlobalNetworkPolicySpec{
		Order: &order, Selector: "has(tier)", Types: []string{"Ingress", "Egress"},
		Ingress: []resource.Rule{{Action: resource.ActionDeny, Source: resource.EntityRule{NotSelector: "tier == 'db'"}}},
		Egress:  []resource.Rule{{Action: resource.ActionAllow, Destination: resource.EntityRule{Selector: "tier in {'db', 'cache'}"}}},
	}}
	s.Policies["rare"] = resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: "rare"}, Spec: resource.GlobalNetworkPolicySpec{
		Selector: "app == 'rare'", Ingress: []resource.Rule{{Action: resource.ActionAllow}}}}
	s.NetworkSets["ext"] = resource.GlobalNetworkSet{Metadata: resource.ObjectMeta{Name: "ext", Labels: map[string]string{"tier": "db"}},
		Spec: resource.GlobalNetworkSetSpec{Nets: []string{LabelPolicyAddr(3) + "/32", "192.0.2.0/24"}}}
	for _, k := range []string{"h0/w0", "h0/w1", "h1/r0"} {
		ep := s.Endpoints[k]
		ep.Labels = map[string]string{"app": ep.Labels["app"], "tier": "db"}
		s.Endpoints[k] = ep
	}
}

// TestRelabelIsCompute: a long run of random label changes (local and
// remote endpoints, into and out of every kind of selector), each applied
// by Relabel on the last Result, gives exactly Compute's Policy of the
// relabelled snapshot; where Relabel declines, Compute's Policy does
// indeed use another set of policies.
func TestRelabelIsCompute(t *testing.T) {
	s := relabelWorld()
	res := Compute(Input{Node: "h0", Snap: s})
	if len(res.Ignored) != 1 || len(res.Dataplane.Policy.Policies) == 0 {
		t.Fatalf("world: %d ignored, %d policies", len(res.Ignored), len(res.Dataplane.Policy.Policies))
	}
	keys := sortedKeys(s.Endpoints)
	apps := []string{"a0", "a1", "a2", "a3", "a17", "a29", "a30", "zz"}
	tiers := []string{"", "db", "cache", "web"}
	rng := rand.New(rand.NewPCG(1, 14))
	declined, incremental, moved := 0, 0, 0
	for step := range 400 {
		key := keys[rng.IntN(len(keys))]
		old := s.Endpoints[key]
		ep := old
		ep.Labels = map[string]string{"app": apps[rng.IntN(len(apps))]}
		if tr := tiers[rng.IntN(len(tiers))]; tr != "" {
			ep.Labels["tier"] = tr
		}
		if step%50 == 7 {
			ep.Labels = map[string]string{"app": "rare"} // a policy no endpoint used
		}
		s.Endpoints[key] = ep
		want := Compute(Input{Node: "h0", Snap: s})
		got, ch, ok := Relabel(s, "h0", res, key, old)
		if !ok {
			if sameKeys(want.Dataplane.Policy.Policies, res.Dataplane.Policy.Policies) {
				t.Fatalf("step %d (%s %v -> %v): declined, but the same policies are in use", step, key, old.Labels, ep.Labels)
			}
			declined++
			res = want
			continue
		}
		incremental++
		if !reflect.DeepEqual(got.Dataplane.Policy, want.Dataplane.Policy) {
			t.Fatalf("step %d (%s %v -> %v): Relabel's policy differs from Compute's:\n got %+v\nwant %+v", step, key, old.Labels, ep.Labels,
				got.Dataplane.Policy.SelectorMembers, want.Dataplane.Policy.SelectorMembers)
		}
		if wantCh := policyChange(res.Dataplane.Policy, want.Dataplane.Policy); !reflect.DeepEqual(ch, wantCh) {
			t.Fatalf("step %d: change %+v, want %+v", step, ch, wantCh)
		}
		if !ch.Empty() {
			moved++
		}
		res = got
	}
	t.Logf("%d declined, %d incremental, %d changing something", declined, incremental, moved)
	if declined == 0 || incremental < 300 || moved < 100 {
		t.Errorf("the run did not cover its cases: %d declined, %d incremental, %d changing something", declined, incremental, moved)
	}
}

// policyChange names the endpoints and selectors whose values differ.
func policyChange(a, b Policy) PolicyChange {
	var ch PolicyChange
	for i := range b.Endpoints {
		if !reflect.DeepEqual(a.Endpoints[i], b.Endpoints[i]) {
			ch.Endpoints = append(ch.Endpoints, b.Endpoints[i].Interface)
		}
	}
	for _, k := range sortedKeys(b.SelectorMembers) {
		if !reflect.DeepEqual(a.SelectorMembers[k], b.SelectorMembers[k]) {
			ch.Selectors = append(ch.Selectors, k)
		}
	}
	return ch
}

// TestRelabelDeclinesOtherChanges: a record that changed more than its
// labels, or went away, needs Compute.
func TestRelabelDeclinesOtherChanges(t *testing.T) {
	s := relabelWorld()
	res := Compute(Input{Node: "h0", Snap: s})
	old := s.Endpoints["h0/w5"]
	ep := old
	ep.Profiles = append(slices.Clone(ep.Profiles), "Q")
	s.Endpoints["h0/w5"] = ep
	if _, _, ok := Relabel(s, "h0", res, "h0/w5", old); ok {
		t.Error("a profile change was taken for a label change")
	}
	delete(s.Endpoints, "h0/w5")
	if _, _, ok := Relabel(s, "h0", res, "h0/w5", old); ok {
		t.Error("a removed record was taken for a label change")
	}
}

// BenchmarkRelabelLabelPolicies is one label change at the scale
// (1000 local endpoints, 200 policies, 50 selectors) through Relabel, the
// agent's path for it; BenchmarkComputeLabelPolicies is the full Compute
// it replaces.
func BenchmarkRelabelLabelPolicies(b *testing.B) {
	s := LabelPolicySnapshot(1000, 200)
	res := Compute(Input{Node: "h0", Snap: s})
	app := make([]int, 1000) // each endpoint's label, app=a<app[k]>
	for k := range app {
		app[k] = k % 50
	}
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		k := (i * 37) % 1000
		key := fmt.Sprintf("h0/w%d", k)
		old := s.Endpoints[key]
		app[k] = (app[k] + 1) % 50
		LabelPolicyRelabel(s, k, app[k])
		var ch PolicyChange
		var ok bool
		res, ch, ok = Relabel(s, "h0", res, key, old)
		if !ok || len(ch.Endpoints) != 1 || len(ch.Selectors) != 2 {
			b.Fatalf("change %d: %+v, ok %v", i, ch, ok)
		}
		i++
	}
}
