package security

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestHostileLabelPolicyRecords: label policy trusts labels and policy
// records, so a stray writer with access to etcd tries both.
//
// Policy w1-in lets into worker-1 only workloads in profile PROF_2 (the
// implicit label profile.projectcalico.org/PROF_2): worker-2 gets in,
// worker-3 (PROF_1, which its profiles alone would let in) does not.
//
//  1. worker-3's record claims the implicit label itself; the agents must
//     ignore a record's own labels under projectcalico.org prefixes.
//  2. w1-in is overwritten straight in etcd with a selector that does not
//     parse; the agents must keep the last good policy, not drop it (which
//     would hand worker-1 back to its profiles and let worker-3 in).
//
// After each write, an honest profile change made later (its effect is
// visible) shows host1's agent has processed the hostile write.
func TestHostileLabelPolicyRecords(t *testing.T) {
	w, ctx := w1InWorld(t, true)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w2, w3 := w.Workloads["worker-1"], w.Workloads["worker-2"], w.Workloads["worker-3"]
	// worker-2's own profile PROF_2 lets it send; w1-in lets it in.
	mustOpen(t, ctx, "worker-2 -> worker-1 (PROF_2, allowed by w1-in)", w2, w1)
	mustBlock(t, ctx, "worker-3 -> worker-1 (PROF_1, end of w1-in's tier)", w3, w1)

	cli := e2etest.EtcdFrom(t, h1, w.Etcd)
	attacked := 0
	check := func(what string) {
		t.Helper()
		for range 3 {
			if err := e2etest.Blocked(ctx, w3.Netns, netip.Addr{}, e2etest.AP(w1.IP, 8080)); err != nil {
				attacked++
				t.Errorf("%s: worker-3 -> worker-1: %v", what, err)
				return
			}
		}
		mustOpen(t, ctx, what+": worker-2 -> worker-1 (honest)", w2, w1)
	}

	// 1. worker-3's record claims PROF_2's implicit label.
	editEndpoint(t, ctx, cli, h2.Label, w3.Name, func(ep *api.Endpoint) {
		ep.Labels = map[string]string{api.ProfileLabelPrefix + "PROF_2": ""}
	})
	// Marker: PROF_2 admits TCP 8080 from anyone; once worker-3 reaches
	// worker-2 there, host1's agent has seen the record above.
	ctl(t, ctx, w, h1, "profile", "PROF_2", "rule", "add", "inbound", "allow", "tcp", "to", "ports", "8080")
	mustOpen(t, ctx, "marker: worker-3 -> worker-2:8080 after PROF_2 admits it", w3, w2)
	check("a record claiming profile.projectcalico.org/PROF_2")

	// 2. w1-in overwritten with a selector that does not parse.
	var bad map[string]any
	if err := json.Unmarshal([]byte(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"w1-in"},"spec":{"selector":"projectcalico.org/workload ==","types":["Ingress"],"ingress":[{"action":"Allow"}]}}`), &bad); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(bad)
	if _, err := cli.Put(ctx, datastore.PolicyKey("w1-in"), string(b)); err != nil {
		t.Fatal(err)
	}
	// Marker: PROF_2 now denies TCP 8080 first.
	ctl(t, ctx, w, h1, "profile", "PROF_2", "rule", "add", "inbound", "--at=1", "deny", "tcp", "to", "ports", "8080")
	mustBlock(t, ctx, "marker: worker-3 -> worker-2:8080 after PROF_2 denies it", w3, w2)
	check("w1-in overwritten with a selector that does not parse")
	t.Logf("FIGURE: hostile label/policy records: %d of 2 attacks let worker-3 into worker-1 (must be 0); worker-2 kept its way in", attacked)
}

// w1InWorld is the walkthrough with TCP 8080 served on worker-1 and
// worker-2, host 2 routing to worker-1, and policy w1-in applied: into
// worker-1 only TCP from workloads in profile PROF_2 (worker-2; worker-3,
// PROF_1, is refused at the end of w1-in's tier). checkBefore also shows
// worker-3 reaching worker-1 before the policy.
func w1InWorld(t *testing.T, checkBefore bool) (*walkthrough.World, context.Context) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	e2etest.ListenTCP(t, w.Workloads["worker-2"].Netns, "0.0.0.0:8080")
	routed(t, ctx, h2, w1.IP, h1)
	if checkBefore {
		mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1, before any policy)", w3, w1)
	}
	const policy = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: w1-in
spec:
  selector: projectcalico.org/workload == 'worker-1'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: has(profile.projectcalico.org/PROF_2)}
`
	file := filepath.Join(t.TempDir(), "w1-in.yaml")
	if err := os.WriteFile(file, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl(t, ctx, w, h1, "apply", "-f", file)
	return w, ctx
}
