// Package why checks `calicoctl why` against the kernel: on the namespace
// lab with the real binaries, etcd and nftables, the seed's walkthrough
// (workers 1 and 2 on host1, worker 3 on host2, PROF_1 = workers 1 and 3,
// PROF_2 = worker 2, a nat-outgoing pool, a network outside the cluster),
// every ordered pair of ends gets ICMP echo and a TCP connect to 8080, and
// every verdict `why` predicts must be what the kernel does. Then label
// policies (a Pass, an Allow by selector and port, an egress end-of-tier
// drop) change the answers, and the kernel must follow again.
package why

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/walkthrough"
)

// labPrefix names every namespace these tests make.
const labPrefix = "cwhy"

func TestMain(m *testing.M) { e2etest.Main(m, labPrefix, nil) }

// end is one end of a flow: a workload or the outside.
type end struct {
	name string // as printed
	arg  string // as given to `calicoctl why`
	ns   *lab.Netns
	ip   netip.Addr
}

// probe is one kind of flow.
type probe struct {
	name string
	args []string // `calicoctl why` flags
	port uint16   // 0: ICMP echo
}

func tcp(port uint16) probe {
	return probe{fmt.Sprintf("tcp/%d", port), []string{"--proto", "tcp", "--port", fmt.Sprint(port)}, port}
}

var probes = []probe{{"icmp", []string{"--proto", "icmp"}, 0}, tcp(8080)}

// Label policies for the later matrices, written to the datastore as
// `calicoctl apply` would write them.
const (
	// worker-2 admits TCP 8080 from PROF_1 members and from the outside
	// network, passes ICMP to its profiles (PROF_2: only PROF_2 members)
	// and drops the rest (end of tier).
	worker2In = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: worker-2-in}
spec:
  order: 10
  selector: projectcalico.org/workload == 'worker-2'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: has(profile.projectcalico.org/PROF_1)}
    destination: {ports: [8080]}
  - action: Allow
    protocol: TCP
    source: {nets: [198.51.100.0/24]}
    destination: {ports: [8080]}
  - action: Pass
    protocol: ICMP
`
	// worker-3 may send ICMP only: its TCP ends in the tier's drop.
	worker3Out = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: worker-3-out}
spec:
  order: 20
  selector: projectcalico.org/workload == 'worker-3'
  types: [Egress]
  egress:
  - action: Allow
    protocol: ICMP
`
)

func TestWhyMatchesTheKernel(t *testing.T) {
	w := e2etest.World(t, labPrefix, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}}, true)
	ctx := e2etest.Ctx(t, 10*time.Minute)
	var ends []end
	for _, name := range []string{"worker-1", "worker-2", "worker-3"} {
		wl := w.Workloads[name]
		ends = append(ends, end{name, name, wl.Netns, wl.IP})
	}
	// The outside by its address: rules may name its network.
	ends = append(ends, end{"outside", w.Outside.IP.String(), w.Outside.Netns, w.Outside.IP})
	// The outside network routes the pool to host1, so what stops it from
	// reaching a workload is policy, not a missing route.
	if err := w.Outside.AddReturnRoute(walkthrough.Pool, w.Hosts[0].Addr().String()); err != nil {
		t.Fatalf("outside route to the pool: %v", err)
	}
	for _, e := range ends {
		e2etest.ListenTCP(t, e.ns, netip.AddrPortFrom(e.ip, 8080).String())
	}
	// Routes and policy are in place once the seed's cross-host path works.
	e2etest.WaitFor(t, 60*time.Second, "worker-1 pings worker-3", func() (bool, string) {
		n := e2etest.PingReplies(ctx, ends[0].ns, netip.Addr{}, ends[2].ip, 1)
		return n > 0, fmt.Sprintf("%d replies", n)
	})

	// The example the README shows, and its JSON twin.
	out := why(ctx, t, w, "worker-1", "worker-2", probes[1])
	t.Logf("calicoctl why worker-1 worker-2 --proto tcp --port 8080:\n%s", out)
	for _, want := range []string{"denied\n", "egress", "profile PROF_1 outbound rule 1: allow", "local: 192.168.100.2/32", "profile PROF_2 inbound: no rule decided", "no profile allowed it: drop"} {
		if !strings.Contains(out, want) {
			t.Errorf("why output lacks %q", want)
		}
	}
	js := why(ctx, t, w, "worker-1", "worker-2", probe{args: append([]string{"-o", "json"}, probes[1].args...)})
	var ans client.WhyAnswer
	if err := json.Unmarshal([]byte(js), &ans); err != nil || ans.Verdict != "denied" || ans.Allowed || len(ans.Steps) == 0 {
		t.Errorf("why -o json: %v, verdict %q, %d steps:\n%s", err, ans.Verdict, len(ans.Steps), js)
	}

	// "outside" stands for an address outside the cluster.
	out = why(ctx, t, w, "outside", "worker-1", probes[0])
	if !strings.HasPrefix(out, "denied\n") || !strings.Contains(out, "note: outside is taken as 203.0.113.1") {
		t.Errorf("why outside worker-1:\n%s", out)
	}

	etcd := e2etest.EtcdFrom(t, w.Hosts[0], w.Etcd)
	for _, c := range []struct {
		name     string
		policies []string
	}{
		{"profiles only", nil},
		{"+ worker-2-in (Allow by selector and port, Pass, end of tier)", []string{worker2In}},
		{"+ worker-3-out (egress end of tier)", []string{worker2In, worker3Out}},
	} {
		setPolicies(ctx, t, etcd, c.policies...)
		matrix(ctx, t, w, c.name, ends, ends, probes)
	}
	out = why(ctx, t, w, "worker-3", "worker-1", probes[1])
	t.Logf("calicoctl why worker-3 worker-1 --proto tcp --port 8080:\n%s", out)
	if !strings.Contains(out, "end of tier") {
		t.Errorf("why worker-3 worker-1 names no end-of-tier drop:\n%s", out)
	}
	out = why(ctx, t, w, "worker-3", "worker-2", probes[0])
	t.Logf("calicoctl why worker-3 worker-2 --proto icmp:\n%s", out)
	if !strings.Contains(out, "policy worker-2-in ingress rule 3: {action: Pass") {
		t.Errorf("why worker-3 worker-2 names no Pass:\n%s", out)
	}
}

// TestWhyNodes checks the guards between workloads and nodes: a workload
// reaches no service of its own host, and no node's control plane (BGP on
// 179, the datastore on 2379), while other ports of other nodes are open.
func TestWhyNodes(t *testing.T) {
	w := e2etest.World(t, labPrefix, walkthrough.Options{PoolArgs: []string{"--nat-outgoing"}}, true)
	ctx := e2etest.Ctx(t, 10*time.Minute)
	var srcs, nodes []end
	for _, name := range []string{"worker-1", "worker-3"} {
		wl := w.Workloads[name]
		srcs = append(srcs, end{name, name, wl.Netns, wl.IP})
	}
	for _, h := range w.Hosts {
		nodes = append(nodes, end{h.Label, h.Addr().String(), h.Netns, h.Addr()})
		e2etest.ListenTCP(t, h.Netns, netip.AddrPortFrom(h.Addr(), 8080).String())
	}
	e2etest.WaitFor(t, 60*time.Second, "worker-1 pings worker-3", func() (bool, string) {
		n := e2etest.PingReplies(ctx, srcs[0].ns, netip.Addr{}, srcs[1].ip, 1)
		return n > 0, fmt.Sprintf("%d replies", n)
	})
	matrix(ctx, t, w, "workloads to nodes", srcs, nodes, []probe{probes[0], tcp(8080), tcp(179), tcp(2379)})
}

// matrix asks `why` about every ordered pair and probe, makes the kernel
// answer, and prints both.
func matrix(ctx context.Context, t *testing.T, w *walkthrough.World, name string, srcs, dsts []end, probes []probe) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s", "src\\dst")
	for _, d := range dsts {
		for _, p := range probes {
			fmt.Fprintf(&b, " %-20s", d.name+" "+p.name)
		}
	}
	b.WriteString("\n")
	total, match := 0, 0
	for _, s := range srcs {
		fmt.Fprintf(&b, "%-10s", s.name)
		for _, d := range dsts {
			for _, p := range probes {
				if s == d {
					fmt.Fprintf(&b, " %-20s", "-")
					continue
				}
				out := why(ctx, t, w, s.arg, d.arg, p)
				predicted := strings.HasPrefix(out, "allowed\n")
				if !predicted && !strings.HasPrefix(out, "denied\n") {
					t.Fatalf("why %s %s %s: first line is not a verdict:\n%s", s.name, d.name, p.name, out)
				}
				observed := reaches(ctx, s, d, p, predicted)
				total++
				mark := ""
				if predicted == observed {
					match++
				} else {
					mark = " MISMATCH"
					t.Errorf("%s: %s -> %s %s: why says %s, the kernel %s:\n%s", name, s.name, d.name, p.name, verdict(predicted), verdict(observed), out)
				}
				fmt.Fprintf(&b, " %-20s", verdict(predicted)[:4]+"/"+verdict(observed)[:4]+mark)
			}
		}
		b.WriteString("\n")
	}
	t.Logf("matrix %s (predicted/observed):\n%s", name, b.String())
	t.Logf("FIGURE: why, %s: %d/%d predictions match the kernel", name, match, total)
}

func verdict(ok bool) string {
	if ok {
		return "allowed"
	}
	return "denied"
}

// why runs `calicoctl why SRC DST FLAGS` on host1.
func why(ctx context.Context, t *testing.T, w *walkthrough.World, src, dst string, p probe) string {
	t.Helper()
	out, err := w.Ctl(ctx, w.Hosts[0], append([]string{"why", src, dst}, p.args...)...)
	if err != nil {
		t.Fatalf("calicoctl why %s %s %s: %v\n%s", src, dst, strings.Join(p.args, " "), err, out)
	}
	return out
}

// reaches says whether the kernel lets the flow through, giving policy
// and routes up to 10 s to settle towards the prediction (agents apply a
// datastore change within a pass); a wrong prediction stays wrong.
func reaches(ctx context.Context, s, d end, p probe, predicted bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got bool
		if p.port == 0 {
			got = e2etest.PingReplies(ctx, s.ns, netip.Addr{}, d.ip, 2) > 0
		} else {
			got = e2etest.DialTCP(ctx, s.ns, netip.Addr{}, e2etest.AP(d.ip, p.port), 1500*time.Millisecond) == nil
		}
		if got == predicted || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// setPolicies makes the GlobalNetworkPolicies of docs the only ones in the
// datastore: each is decoded and validated as ` + "`calicoctl apply`" + ` does and
// its JSON put at datastore.PolicyKey(name), where the agents read it.
func setPolicies(ctx context.Context, t *testing.T, etcd *clientv3.Client, docs ...string) {
	t.Helper()
	if _, err := etcd.Delete(ctx, datastore.PrefixPolicies, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	for _, doc := range docs {
		rs, err := resource.Decode([]byte(doc))
		if err != nil {
			t.Fatalf("policy: %v", err)
		}
		for _, r := range rs {
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := etcd.Put(ctx, datastore.PolicyKey(r.GetName()), string(b)); err != nil {
				t.Fatal(err)
			}
		}
	}
}
