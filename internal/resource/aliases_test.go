package resource

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// aliasBomb is a policy whose rules name one list of nets by alias:
// nets entries in the list, rules rules using it as source and
// destination. Written in flow style, it starts with "{" as a JSON
// record does.
func aliasBomb(nets, rules int, flow bool) string {
	var list strings.Builder
	for i := 0; i < nets; i++ {
		fmt.Fprintf(&list, "10.%d.%d.0/24,", i/256%256, i%256)
	}
	list.WriteString("10.0.0.0/8")
	var b strings.Builder
	if flow {
		b.WriteString(`{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {selector: all(), ingress: [`)
		fmt.Fprintf(&b, "{action: Allow, source: {nets: &n [%s]}}, &r {action: Allow, source: {nets: *n}, destination: {nets: *n}}", list.String())
		b.WriteString(strings.Repeat(", *r", rules))
		b.WriteString("]}}")
		return b.String()
	}
	b.WriteString("apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: p\nspec:\n  selector: all()\n  ingress:\n")
	fmt.Fprintf(&b, "  - action: Allow\n    source:\n      nets: &n [%s]\n  - &r {action: Allow, source: {nets: *n}, destination: {nets: *n}}\n", list.String())
	b.WriteString(strings.Repeat("  - *r\n", rules))
	return b.String()
}

// TestAliasBombRefused: a file of 55 KB whose aliases expand to a policy of
// 16 million nets (249 MB of JSON) is refused with one error naming the
// aliases, in both YAML styles; a file that shares a rule by alias a few
// times decodes as before.
func TestAliasBombRefused(t *testing.T) {
	for _, flow := range []bool{false, true} {
		bomb := aliasBomb(2000, 4000, flow)
		rs, err := Decode([]byte(bomb))
		if err == nil {
			j, _ := json.Marshal(rs)
			t.Errorf("flow %v: a %d-byte file of aliases decoded to %d bytes of JSON", flow, len(bomb), len(j))
		} else if !strings.Contains(err.Error(), "aliases") {
			t.Errorf("flow %v: refused, but not for its aliases: %v", flow, err)
		}
	}
	honest := aliasBomb(20, 5, false)
	rs, err := Decode([]byte(honest))
	if err != nil {
		t.Fatalf("a file sharing a rule by alias: %v", err)
	}
	if got := len(rs[0].(*GlobalNetworkPolicy).Spec.Ingress); got != 7 {
		t.Errorf("honest aliases: %d ingress rules, want 7", got)
	}
}
