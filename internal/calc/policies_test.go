package calc

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/resource"
)

// withPolicies adds the policies and network sets of a YAML file to s, as
// the store would after `calicoctl apply -f`.
func withPolicies(t *testing.T, s *Snapshot, yaml string) *Snapshot {
	t.Helper()
	rs, err := resource.Decode([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		switch v := r.(type) {
		case *resource.GlobalNetworkPolicy:
			s.Policies[v.Metadata.Name] = *v
		case *resource.GlobalNetworkSet:
			s.NetworkSets[v.Metadata.Name] = *v
		}
	}
	return s
}

func gnp(name, spec string) string {
	return "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: " + name + "\nspec:\n" + spec + "\n"
}

// endpointPolicies returns, per local interface, "in:A,B out:C".
func endpointPolicies(r Result) map[string]string {
	out := map[string]string{}
	for _, ep := range r.Dataplane.Policy.Endpoints {
		out[ep.Interface] = "in:" + strings.Join(ep.IngressPolicies, ",") + " out:" + strings.Join(ep.EgressPolicies, ",")
	}
	return out
}

func TestPolicyOrderAndSelection(t *testing.T) {
	w1 := api.WorkloadIfaceName("h1", "w1") // profile P1
	w2 := api.WorkloadIfaceName("h1", "w2") // profile P2
	cases := []struct {
		name     string
		yaml     string
		want     map[string]string
		policies []string // rendered policies
	}{{
		name: "no policy: profiles decide both directions",
		yaml: "",
		want: map[string]string{w1: "in: out:", w2: "in: out:"},
	}, {
		name: "order ascending, no order last, ties by name",
		yaml: gnp("z-none", "  selector: all()") +
			gnp("b-ten", "  order: 10\n  selector: all()") +
			gnp("a-ten", "  order: 10\n  selector: all()") +
			gnp("c-one", "  order: 1\n  selector: all()") +
			gnp("a-none", "  selector: all()") +
			gnp("d-half", "  order: 0.5\n  selector: all()"),
		want:     map[string]string{w1: "in:d-half,c-one,a-ten,b-ten,a-none,z-none out:", w2: "in:d-half,c-one,a-ten,b-ten,a-none,z-none out:"},
		policies: []string{"a-none", "a-ten", "b-ten", "c-one", "d-half", "z-none"},
	}, {
		name: "types: default Ingress, Egress only with egress rules; explicit types",
		yaml: gnp("in-only", "  selector: all()\n  ingress:\n  - action: Allow") +
			gnp("both-default", "  selector: all()\n  egress:\n  - action: Allow") +
			gnp("egress-only", "  selector: all()\n  types: [Egress]"),
		want:     map[string]string{w1: "in:both-default,in-only out:both-default,egress-only", w2: "in:both-default,in-only out:both-default,egress-only"},
		policies: []string{"both-default", "egress-only", "in-only"},
	}, {
		name: "implicit labels: profile, workload, node, orchestrator",
		yaml: gnp("by-profile", "  selector: has(profile.projectcalico.org/P1)") +
			gnp("by-workload", "  selector: projectcalico.org/workload == 'w2'") +
			gnp("by-node", "  selector: projectcalico.org/node == 'h2'\n  types: [Ingress, Egress]") +
			gnp("not-netns", "  selector: projectcalico.org/orchestrator != 'netns'"),
		want:     map[string]string{w1: "in:by-profile out:", w2: "in:by-workload out:"},
		policies: []string{"by-profile", "by-workload"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
			for k, ep := range s.Endpoints {
				ep.Orchestrator = "netns"
				s.Endpoints[k] = ep
			}
			if tc.yaml != "" {
				withPolicies(t, s, tc.yaml)
			}
			r := Compute(Input{Node: "h1", Snap: s})
			got := endpointPolicies(r)
			for iface, want := range tc.want {
				if got[iface] != want {
					t.Errorf("%s: got %q, want %q", iface, got[iface], want)
				}
			}
			var names []string
			for n := range r.Dataplane.Policy.Policies {
				names = append(names, n)
			}
			slices.Sort(names)
			if !slices.Equal(names, tc.policies) {
				t.Errorf("rendered policies %v, want %v (only those applying to a local endpoint)", names, tc.policies)
			}
		})
	}
}

func TestPolicyOwnLabels(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	ep := s.Endpoints["h1/w1"]
	// A record's own label under the implicit prefix is ignored: w1 cannot
	// claim to be w2 to get w2's policy.
	ep.Labels = map[string]string{"app": "web", api.LabelWorkload: "w2"}
	s.Endpoints["h1/w1"] = ep
	withPolicies(t, s, gnp("web", "  selector: app == 'web'")+gnp("w2", "  selector: projectcalico.org/workload == 'w2'"))
	got := endpointPolicies(Compute(Input{Node: "h1", Snap: s}))
	if w := got[api.WorkloadIfaceName("h1", "w1")]; w != "in:web out:" {
		t.Errorf("w1: %q, want only web", w)
	}
}

func TestSelectorMembers(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	withPolicies(t, s, gnp("p", `  selector: all()
  ingress:
  - action: Allow
    source:
      selector: has(profile.projectcalico.org/P1)
  - action: Deny
    source:
      notSelector: "role == 'ext'"
  egress:
  - action: Allow
    destination:
      selector: role in {'ext', 'dns'}
      nets: [10.9.0.0/16]
      ports: [53, "8000:8080"]
    protocol: UDP`)+`---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: outside
  labels: {role: ext}
spec:
  nets: [203.0.113.0/24, "2001:db8::/48", 198.51.100.7]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: unlabelled
spec:
  nets: [192.0.2.0/24]
`)
	r := Compute(Input{Node: "h1", Snap: s})
	m := r.Dataplane.Policy.SelectorMembers
	str := func(ps []netip.Prefix) string {
		var out []string
		for _, p := range ps {
			out = append(out, p.String())
		}
		return strings.Join(out, " ")
	}
	// P1 members cluster-wide: w1 here and w3 on h2.
	if got := str(m["has(profile.projectcalico.org/P1)"].V4); got != "192.168.100.1/32 192.168.100.65/32" {
		t.Errorf("P1 members %q", got)
	}
	ext := m["role == \"ext\""]
	if str(ext.V4) != "198.51.100.7/32 203.0.113.0/24" || str(ext.V6) != "2001:db8::/48" {
		t.Errorf("ext members %q %q", str(ext.V4), str(ext.V6))
	}
	if len(m) != 3 {
		t.Errorf("selectors %v, want 3", m)
	}
	eg := r.Dataplane.Policy.Policies["p"].Egress[0]
	if eg.Protocol != 17 || eg.Dst.Selector != `role in {"dns", "ext"}` || !slices.Equal(eg.Dst.Ports, []api.PortRange{{Min: 53, Max: 53}, {Min: 8000, Max: 8080}}) ||
		eg.Dst.Nets[0] != netip.MustParsePrefix("10.9.0.0/16") {
		t.Errorf("egress rule %+v", eg)
	}
	if in := r.Dataplane.Policy.Policies["p"].Ingress[1]; in.Action != resource.ActionDeny || in.Src.NotSelector != `role == "ext"` {
		t.Errorf("ingress rule 2 %+v", in)
	}
}

// A record the store did not validate (written to etcd by hand): a bad
// policy selector applies the policy nowhere, a bad rule becomes a Deny at
// its place; both are reported.
func TestPolicyUnvalidated(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	s.Policies["bad-sel"] = resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: "bad-sel"}, Spec: resource.GlobalNetworkPolicySpec{Selector: "app =="}}
	s.Policies["bad-rule"] = resource.GlobalNetworkPolicy{Metadata: resource.ObjectMeta{Name: "bad-rule"}, Spec: resource.GlobalNetworkPolicySpec{
		Ingress: []resource.Rule{{Action: "Allow"}, {Action: "Allow", Source: resource.EntityRule{Selector: "(("}}}}}
	r := Compute(Input{Node: "h1", Snap: s})
	if got := endpointPolicies(r)[api.WorkloadIfaceName("h1", "w1")]; got != "in:bad-rule out:" {
		t.Errorf("w1 %q", got)
	}
	rules := r.Dataplane.Policy.Policies["bad-rule"].Ingress
	if len(rules) != 2 || rules[0].Action != resource.ActionAllow || rules[1].Action != resource.ActionDeny || rules[1].Src.Selector != "" {
		t.Errorf("rules %+v", rules)
	}
	joined := strings.Join(r.Problems, "\n")
	if !strings.Contains(joined, "policy bad-sel: spec.selector") || !strings.Contains(joined, "policy bad-rule ingress rule 2") {
		t.Errorf("problems %q", joined)
	}
}
