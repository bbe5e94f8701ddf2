package resource

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const goodYAML = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-web
  labels:
    team: blue
spec:
  order: 100
  selector: app == "web"
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: app == "client"
    destination:
      ports: [80, "8080:8090"]
  - action: Deny
    protocol: 17
    notProtocol: UDP
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  egress:
  - action: Pass
    destination:
      nets: [10.0.0.0/8, 192.168.1.7]
      notNets: ["10.1.0.0/16"]
---
# an empty document is skipped
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: partners
  labels: {role: partner}
spec:
  nets: [198.51.100.0/24, "2001:db8::/32"]
`

func TestDecodeGood(t *testing.T) {
	rs, err := Decode([]byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("got %d resources", len(rs))
	}
	p := rs[0].(*GlobalNetworkPolicy)
	if p.Metadata.Name != "allow-web" || *p.Spec.Order != 100 || p.Spec.Selector != `app == "web"` {
		t.Errorf("policy: %+v", p)
	}
	in := p.Spec.Ingress
	if in[0].Protocol.Number != 6 || in[0].Destination.Ports[1] != (Port{Min: 8080, Max: 8090}) || in[0].Destination.Ports[0] != (Port{Min: 80, Max: 80}) {
		t.Errorf("ingress[0]: %+v", in[0])
	}
	if in[1].Protocol.Name != "UDP" || in[1].NotProtocol.Number != 17 {
		t.Errorf("ingress[1]: %+v", in[1])
	}
	if *in[2].ICMP.Type != 8 || *in[2].ICMP.Code != 0 {
		t.Errorf("ingress[2]: %+v", in[2])
	}
	s := rs[1].(*GlobalNetworkSet)
	if s.Metadata.Labels["role"] != "partner" || len(s.Spec.Nets) != 2 {
		t.Errorf("set: %+v", s)
	}
	// JSON round trip: what `get -o json` writes, Decode reads.
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	rs2, err := Decode(b)
	if err != nil {
		t.Fatalf("decoding our own JSON %s: %v", b, err)
	}
	b2, _ := json.Marshal(rs2[0])
	if string(b) != string(b2) {
		t.Errorf("JSON round trip changed the policy:\n%s\n%s", b, b2)
	}
}

func TestPolicyTypes(t *testing.T) {
	for _, tc := range []struct {
		spec    GlobalNetworkPolicySpec
		in, out bool
	}{
		{GlobalNetworkPolicySpec{}, true, false},
		{GlobalNetworkPolicySpec{Egress: []Rule{{Action: ActionAllow}}}, true, true},
		{GlobalNetworkPolicySpec{Types: []string{TypeEgress}}, false, true},
	} {
		in, out := tc.spec.PolicyTypes()
		if in != tc.in || out != tc.out {
			t.Errorf("%+v: %v %v", tc.spec, in, out)
		}
	}
}

// TestDecodeErrors: each bad input gets an error at the right line and
// column naming the field, and nothing is returned.
func TestDecodeErrors(t *testing.T) {
	const head = "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n"
	for _, tc := range []struct {
		name, in  string
		line, col int
		want      string
	}{
		{"syntax", "apiVersion: [", 1, 13, ""},
		{"not a mapping", "- a\n- b\n", 1, 1, "must be a mapping"},
		{"no apiVersion", "kind: GlobalNetworkPolicy\n", 1, 1, "apiVersion: missing"},
		{"bad apiVersion", "apiVersion: v1\nkind: GlobalNetworkPolicy\n", 1, 13, `apiVersion: "v1" is not supported`},
		{"bad kind", "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\n", 2, 7, `kind: "NetworkPolicy" is not supported`},
		{"unknown field", head + "  selectr: all()\n", 6, 3, "unknown field"},
		{"unknown rule field", head + "  ingress:\n  - action: Allow\n    protocl: TCP\n", 8, 5, "unknown field"},
		{"bad name", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: Bad_Name\n", 4, 9, "metadata.name"},
		{"bad action", head + "  ingress:\n  - action: Allow\n  - action: Allo\n", 8, 13, `spec.ingress[1].action: "Allo"`},
		{"missing action", head + "  egress:\n  - protocol: TCP\n", 7, 5, "spec.egress[0].action: required"},
		{"bad selector", head + "  selector: app = 'x'\n", 6, 13, "spec.selector: selector"},
		{"bad rule selector", head + "  ingress:\n  - action: Allow\n    source:\n      selector: has(\n", 9, 17, "spec.ingress[0].source.selector"},
		{"bad protocol", head + "  ingress:\n  - action: Allow\n    protocol: TPC\n", 8, 15, "unknown protocol"},
		{"bad port", head + "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [\"90:80\"]\n", 10, 15, "first port is above"},
		{"named port", head + "  ingress:\n  - action: Allow\n    protocol: TCP\n    destination:\n      ports: [http]\n", 10, 15, "named port"},
		{"ports without protocol", head + "  ingress:\n  - action: Allow\n    destination:\n      ports: [80]\n", 9, 14, "need protocol TCP"},
		{"bad net", head + "  egress:\n  - action: Allow\n    destination:\n      nets: [10.0.0.0/33]\n", 9, 14, "spec.egress[0].destination.nets[0]"},
		{"family mismatch", head + "  egress:\n  - action: Allow\n    ipVersion: 6\n    destination:\n      nets: [10.0.0.0/8]\n", 10, 14, "does not match ipVersion 6"},
		{"icmp without protocol", head + "  ingress:\n  - action: Allow\n    icmp: {type: 8}\n", 8, 12, "needs protocol ICMP"},
		{"icmp code without type", head + "  ingress:\n  - action: Allow\n    protocol: ICMP\n    icmp: {code: 1}\n", 9, 18, "needs a type"},
		{"bad type", head + "  types: [Ingress, Egres]\n", 6, 20, `"Egres"`},
		{"egress without type", head + "  types: [Ingress]\n  egress:\n  - action: Allow\n", 8, 3, "need Egress in spec.types"},
		{"bad label", "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: s\n  labels:\n    'a b': x\n", 6, 0, "label key"},
		{"wrong type", head + "  order: high\n", 6, 10, ""},
	} {
		rs, err := Decode([]byte(tc.in))
		if err == nil || rs != nil {
			t.Errorf("%s: Decode = %v, %v; want an error and nothing", tc.name, rs, err)
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("%s: %v is not a positioned error", tc.name, err)
			continue
		}
		if e.Line != tc.line || tc.col != 0 && e.Column != tc.col || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %q (line %d column %d); want line %d column %d containing %q", tc.name, err, e.Line, e.Column, tc.line, tc.col, tc.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", tc.name, err)
		}
	}
}

func TestDecodeAllOrNothing(t *testing.T) {
	in := goodYAML + "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata:\n  name: partners\n"
	rs, err := Decode([]byte(in))
	if err == nil || rs != nil || !strings.Contains(err.Error(), `is also defined in document 2`) {
		t.Errorf("duplicate: %v %v", rs, err)
	}
	if _, err := Decode([]byte("---\n---\n")); err == nil {
		t.Error("empty input accepted")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(goodYAML))
	f.Add([]byte(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"a"},"spec":{"nets":["10.0.0.0/8"]}}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		rs, err := Decode(in)
		if err != nil {
			if rs != nil {
				t.Fatal("resources returned with an error")
			}
			return
		}
		for _, r := range rs {
			if r.GetName() == "" {
				t.Fatalf("a resource without a name was accepted: %+v", r)
			}
		}
	})
}

// TestDecodeList reads what `calicoctl get TYPE -o json` prints for several
// resources (a "GlobalNetworkPolicyList"), so that output applies as it is,
// and rejects lists that mix kinds, hold non-mappings or bad items, naming
// the item.
func TestDecodeList(t *testing.T) {
	list := `{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicyList", "items": [
  {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "a"}, "spec": {"selector": "all()"}},
  {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "b"}, "spec": {"order": 5}}
]}`
	rs, err := Decode([]byte(list))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].GetName() != "a" || rs[1].GetName() != "b" {
		t.Fatalf("got %v", rs)
	}
	generic := "apiVersion: projectcalico.org/v3\nkind: List\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkSet\n  metadata: {name: s}\n  spec: {nets: [10.0.0.0/8]}\n"
	if rs, err := Decode([]byte(generic)); err != nil || len(rs) != 1 || rs[0].GetKind() != KindGlobalNetworkSet {
		t.Fatalf("generic list: %v %v", rs, err)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"mixed kinds": {`{"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSetList", "items": [
  {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "a"}, "spec": {}}]}`, `line 2, column 50: items[0].kind: "GlobalNetworkPolicy" in a list of GlobalNetworkSet`},
		"bad item field": {"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyList\nitems:\n- apiVersion: projectcalico.org/v3\n  kind: GlobalNetworkPolicy\n  metadata: {name: a}\n  spec: {selector: \"app ==\"}\n",
			`line 7, column 20: items[0].spec.selector`},
		"scalar item":   {"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyList\nitems:\n- 3\n", "line 4, column 3: items[0]: an item must be a mapping"},
		"unknown field": {"apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicyList\nspec: {}\n", "line 3, column 1: spec: unknown field"},
		"unknown list":  {"apiVersion: projectcalico.org/v3\nkind: NodeList\n", `"NodeList" is not supported`},
		"duplicate": {"apiVersion: projectcalico.org/v3\nkind: List\nitems:\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: s}, spec: {}}\n- {apiVersion: projectcalico.org/v3, kind: GlobalNetworkSet, metadata: {name: s}, spec: {}}\n",
			`items[1].metadata.name: GlobalNetworkSet "s" is also defined`},
	} {
		_, err := Decode([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
