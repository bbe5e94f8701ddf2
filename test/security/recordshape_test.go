package security

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
)

// TestHostileRecordShapes: a stray writer with access to etcd stores two
// policy records every agent decodes, each small, each shaped to make the
// YAML decoder the agents read policy records with do far more than its
// size:
//
//   - a YAML flow mapping (it starts with "{" as JSON does) whose rules name
//     one list of nets by alias: 20 KB that expand to 2 million nets;
//   - 100000 nested "[" (200 KB): the parser spent 58 s on them before
//     refusing them, on every agent, on every re-listing.
//
// Both are refused at once (records are JSON; JSON stops at 10000
// levels, and the agent logs each record it skips): an honest profile
// change made after them reaches the dataplane, and the policy in force
// (w1-in) stays in force. Before, the marker did not arrive within its
// 10 s wait: the agents were still decoding.
func TestHostileRecordShapes(t *testing.T) {
	w, ctx := w1InWorld(t, false)
	h1 := w.Hosts[0]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	mustBlock(t, ctx, "worker-3 -> worker-1 (end of w1-in's tier)", w3, w1)

	var nets strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&nets, "10.%d.%d.0/24,", i/256, i%256)
	}
	bomb := `{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: bomb}, spec: {selector: all(), ingress: [` +
		`{action: Allow, source: {nets: &n [` + nets.String() + `10.0.0.0/8]}}, &r {action: Allow, source: {nets: *n}, destination: {nets: *n}}` +
		strings.Repeat(", *r", 1000) + `]}}`
	deep := `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"deep"},"spec":{"selector":"all()","ingress":` +
		strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}}`
	cli := e2etest.EtcdFrom(t, h1, w.Etcd)
	for name, v := range map[string]string{"bomb": bomb, "deep": deep} {
		if _, err := cli.Put(ctx, datastore.PolicyKey(name), v); err != nil {
			t.Fatal(err)
		}
	}
	// Marker: PROF_2 admits TCP 8080 from anyone; once worker-3 reaches
	// worker-2 there, host1's agent has read past both records.
	ctl(t, ctx, w, h1, "profile", "PROF_2", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "8080")
	if err := e2etest.Opens(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w2.IP, 8080)); err != nil {
		t.Errorf("marker: worker-3 -> worker-2:8080 after PROF_2 admits it: %v (the agents are still decoding the hostile records)", err)
	}
	mustBlock(t, ctx, "worker-3 -> worker-1 (w1-in still in force)", w3, w1)
	// Each agent says what it skipped, and why.
	for _, h := range w.Hosts {
		for _, name := range []string{"bomb", "deep"} {
			if agentLogCount(t, w, h, datastore.PolicyKey(name)+" skipped: not one JSON object") == 0 {
				t.Errorf("%s's agent log does not say record %s was skipped as not JSON", h.Label, datastore.PolicyKey(name))
			}
		}
	}
}
