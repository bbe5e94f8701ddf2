package policy

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// verdict is what the policies of one direction say about a probe:
// nothing (the profiles decide, as after a Pass), allow or deny (an Allow
// or Deny rule, or the end of the tier).
type verdict int

const (
	profiles verdict = iota
	allow
	deny
)

// rule gives one direction's verdict; nil means no policy applies.
type rule func(src, dst *node, k kind) verdict

// A case: its policies (YAML, as a user applies them), what ingress (to
// dst) and egress (from src) policies decide, and optional steps around it.
type policyCase struct {
	name     string
	yaml     string
	in, out  rule
	setup    func(t *testing.T, m *matrixLab)
	teardown func(t *testing.T, m *matrixLab)
	check    func(t *testing.T, m *matrixLab) // after the matrix matched
}

// truth combines the two directions with the profiles: a workload's
// profiles let it send anywhere, and admit members of the same profile.
// The outside network is no endpoint: no ingress policy or profile.
func (c policyCase) truth(src, dst *node, k kind) bool {
	out := profiles
	if c.out != nil {
		out = c.out(src, dst, k)
	}
	in := profiles
	if c.in != nil && !dst.outside {
		in = c.in(src, dst, k)
	}
	return out != deny && (dst.outside || in == allow || in == profiles && src.profile == dst.profile)
}

func app(n *node, a string) bool { return n.labels["app"] == a }

func allowIf(ok bool) verdict {
	if ok {
		return allow
	}
	return deny
}

// ingressTo: policies apply to destinations matching sel.
func ingressTo(sel func(*node) bool, r func(src, dst *node, k kind) verdict) rule {
	return func(src, dst *node, k kind) verdict {
		if !sel(dst) {
			return profiles
		}
		return r(src, dst, k)
	}
}

// egressFrom: policies apply to sources matching sel.
func egressFrom(sel func(*node) bool, r func(src, dst *node, k kind) verdict) rule {
	return func(src, dst *node, k kind) verdict {
		if !sel(src) {
			return profiles
		}
		return r(src, dst, k)
	}
}

func isApp(a string) func(*node) bool { return func(n *node) bool { return app(n, a) } }

func gnp(name, spec string) string {
	return "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: " + name + "\nspec:\n" + spec + "\n"
}

var cases = []policyCase{{
	name: "no policy: the profiles decide",
}, {
	name: "default deny ingress",
	yaml: gnp("default-deny", "  selector: all()\n  types: [Ingress]"),
	in:   func(src, dst *node, k kind) verdict { return deny },
}, {
	name: "default deny egress (the outside too)",
	yaml: gnp("default-deny", "  selector: all()\n  types: [Egress]"),
	out:  func(src, dst *node, k kind) verdict { return deny },
}, {
	name: "allow by label: db admits web on TCP 8080 only",
	yaml: gnp("db", `  selector: app == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: app == 'web'}
    destination: {ports: [8080]}`),
	in: ingressTo(isApp("db"), func(src, dst *node, k kind) verdict { return allowIf(app(src, "web") && k == tcp8080) }),
}, {
	name: "port ranges: web admits TCP 79:81 and UDP 50:60 from anyone (lone-1 too: Allow needs no profile)",
	yaml: gnp("web-ports", `  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: ["79:81"]}
  - action: Allow
    protocol: UDP
    destination: {ports: ["50:60"]}`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k == tcp80 || k == udp53) }),
}, {
	name: "notPorts and notProtocol: web admits TCP but port 80, and everything but TCP",
	yaml: gnp("web-not", `  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {notPorts: [80]}
  - action: Allow
    notProtocol: TCP`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k != tcp80) }),
}, {
	name: "ICMP type: web admits echo requests and TCP; other ICMP and UDP end the tier",
	yaml: gnp("web-icmp", `  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8}
  - action: Deny
    protocol: ICMP
  - action: Allow
    protocol: TCP`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k != udp53) }),
}, {
	name: "egress to a CIDR: clients reach only 198.51.100.0/24",
	yaml: gnp("clients-out", `  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Allow
    destination: {nets: [198.51.100.0/24]}`),
	out: egressFrom(isApp("client"), func(src, dst *node, k kind) verdict { return allowIf(dst.outside) }),
}, {
	name: "egress to a GlobalNetworkSet by label: monitors reach zone=outside and web on TCP 80",
	yaml: gnp("monitors-out", `  selector: app == 'monitor'
  types: [Egress]
  egress:
  - action: Allow
    destination: {selector: zone == 'outside'}
  - action: Allow
    protocol: TCP
    destination: {selector: app == 'web', ports: [80]}`) + `---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: internet
  labels: {zone: outside}
spec:
  nets: [198.51.100.0/24]
`,
	out: egressFrom(isApp("monitor"), func(src, dst *node, k kind) verdict {
		return allowIf(dst.outside || app(dst, "web") && k == tcp80)
	}),
}, {
	name: "Pass: clients go to the profiles (cluster admits them, alone does not), skipping the later Allow everyone else gets",
	yaml: gnp("pass-clients", `  order: 100
  selector: app == 'db' || projectcalico.org/workload == 'lone-1'
  ingress:
  - action: Pass
    source: {selector: app == 'client'}`) + gnp("allow-rest", `  order: 200
  selector: app == 'db' || projectcalico.org/workload == 'lone-1'
  ingress:
  - action: Allow`),
	in: ingressTo(func(n *node) bool { return app(n, "db") || n.name == "lone-1" }, func(src, dst *node, k kind) verdict {
		if app(src, "client") {
			return profiles
		}
		return allow
	}),
}, {
	name: "Log logs and goes on: web logs everything, denies TCP 8080, allows the rest",
	yaml: gnp("log-web", `  selector: app == 'web'
  ingress:
  - action: Log
  - action: Deny
    protocol: TCP
    destination: {ports: [8080]}
  - action: Allow`),
	in:    ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k != tcp8080) }),
	check: logCounted,
}, {
	name: "order: the Allow at order 50 comes before the Deny at 100; the rest ends the tier",
	yaml: gnp("a-deny", `  order: 100
  selector: app == 'web'
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}`) + gnp("b-allow", `  order: 50
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination: {ports: [80]}`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k == tcp80) }),
}, {
	name: "order ties are broken by name: tie-a (Deny clients TCP 80) before tie-b (Allow)",
	yaml: gnp("tie-b", `  order: 100
  selector: app == 'web'
  ingress:
  - action: Allow`) + gnp("tie-a", `  order: 100
  selector: app == 'web'
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [80]}`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(!(app(src, "client") && k == tcp80)) }),
}, {
	name: "a policy without order comes after every ordered one: the Deny TCP 80 at order 1000 wins over the Allow",
	yaml: gnp("aaa-no-order", `  selector: app == 'web'
  ingress:
  - action: Allow`) + gnp("zzz-ordered", `  order: 1000
  selector: app == 'web'
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [80]}`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(k != tcp80) }),
}, {
	name: "implicit label projectcalico.org/node: host3's workloads admit only host3's",
	yaml: gnp("host3", `  selector: projectcalico.org/node == 'host3'
  ingress:
  - action: Allow
    source: {selector: projectcalico.org/node == 'host3'}`),
	in: ingressTo(func(n *node) bool { return n.host == "host3" }, func(src, dst *node, k kind) verdict { return allowIf(src.host == "host3") }),
}, {
	name: "implicit labels profile.projectcalico.org/NAME and projectcalico.org/workload: lone-1 admits mon-2 and cli-3",
	yaml: gnp("lone", `  selector: has(profile.projectcalico.org/alone)
  ingress:
  - action: Allow
    source: {selector: "projectcalico.org/workload in {'mon-2', 'cli-3'}"}`),
	in: ingressTo(func(n *node) bool { return n.profile == "alone" }, func(src, dst *node, k kind) verdict {
		return allowIf(src.name == "mon-2" || src.name == "cli-3")
	}),
}, {
	name: "both directions decide: clients may send only TCP, web admits only clients",
	yaml: gnp("clients-tcp", `  selector: app == 'client'
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP`) + gnp("web-from-clients", `  selector: app == 'web'
  ingress:
  - action: Allow
    source: {selector: app == 'client'}`),
	out: egressFrom(isApp("client"), func(src, dst *node, k kind) verdict { return allowIf(k == tcp80 || k == tcp8080) }),
	in:  ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allowIf(app(src, "client")) }),
}, {
	name: "notSelector: db admits TCP from everyone but clients",
	yaml: gnp("db-not-clients", `  selector: app == 'db'
  ingress:
  - action: Allow
    protocol: TCP
    source: {notSelector: app == 'client'}`),
	in: ingressTo(isApp("db"), func(src, dst *node, k kind) verdict {
		return allowIf(!app(src, "client") && (k == tcp80 || k == tcp8080))
	}),
}, {
	name: "set and has: web admits clients and monitors without a team (cli-3 has one)",
	yaml: gnp("web-teamless", `  selector: app == 'web'
  ingress:
  - action: Allow
    source: {selector: "app in {'client', 'monitor'} && !has(team)"}`),
	in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict {
		return allowIf((app(src, "client") || app(src, "monitor")) && src.labels["team"] == "")
	}),
}, {
	name: "a label change moves a workload into a selector: lone-1 labelled app=client reaches db",
	yaml: gnp("db-from-clients", `  selector: app == 'db'
  ingress:
  - action: Allow
    source: {selector: app == 'client'}`),
	setup:    func(t *testing.T, m *matrixLab) { m.setLabels(t, m.node("lone-1"), map[string]string{"app": "client"}) },
	teardown: func(t *testing.T, m *matrixLab) { m.setLabels(t, m.node("lone-1"), nil) },
	in:       ingressTo(isApp("db"), func(src, dst *node, k kind) verdict { return allowIf(app(src, "client")) }),
}}

func (m *matrixLab) node(name string) *node {
	i := slices.IndexFunc(m.nodes, func(n *node) bool { return n.name == name })
	return m.nodes[i]
}

// caseTimeout bounds how long a case may take to show its matrix: the
// agents apply a change in well under a second; probing takes a few.
const caseTimeout = 30 * time.Second

func TestPolicyMatrix(t *testing.T) {
	m := newMatrixLab(t)
	start := time.Now()
	for i, c := range cases {
		ok := t.Run(fmt.Sprintf("%02d", i+1), func(t *testing.T) {
			if c.setup != nil {
				c.setup(t, m)
			}
			if c.teardown != nil {
				defer c.teardown(t, m)
			}
			m.applyPolicies(t, c.yaml)
			if c.yaml != "" {
				t.Logf("policies:\n%s", c.yaml)
			}
			m.converge(t, c.name, c.truth, caseTimeout)
			if c.check != nil && !t.Failed() {
				c.check(t, m)
			}
		})
		if !ok && i == 0 {
			t.Fatal("the profiles alone do not give the expected matrix: the lab is broken, no case would prove anything")
		}
	}
	t.Run("live connection", func(t *testing.T) { liveConnection(t, m) })
	t.Logf("FIGURE: %d cases, %d cells of 4 probes each, in %v", len(cases)+1, len(m.srcs)*(len(m.nodes)-1), time.Since(start).Round(time.Second))
}

// logCounted: on every host, a probe to its web workload is counted by
// the Log rule (and, the matrix showed, decided by the rules after it).
// The probe comes right before the reading: the agent's periodic full
// rewrite of the table starts counters again from zero.
func logCounted(t *testing.T, m *matrixLab) {
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ log prefix "calico-pol log-web: "`)
	cli := m.node("cli-1")
	for _, h := range m.w.Hosts {
		web := m.node("web-" + strings.TrimPrefix(h.Label, "host"))
		n := 0
		for try := 0; try < 3 && n == 0; try++ {
			if got := probe(cli, web, tcp80); got != 'T' {
				t.Fatalf("cli-1 -> %s TCP 80: %c", web.name, got)
			}
			out, err := h.Run(context.Background(), "nft", "list", "table", "inet", "calico")
			if err != nil {
				t.Fatalf("%s: %v", h.Label, err)
			}
			mm := re.FindStringSubmatch(out)
			if mm == nil {
				t.Fatalf("%s: no Log rule of log-web in the table", h.Label)
			}
			n, _ = strconv.Atoi(mm[1])
		}
		if n == 0 {
			t.Errorf("%s: the Log rule counted no packet of cli-1 -> %s", h.Label, web.name)
		} else {
			t.Logf("%s: log-web's Log rule counted %d packets", h.Label, n)
		}
	}
}

// liveConnection: a connection that policy allowed survives the policy
// turning against it (conntrack: established flows pass before policy, as
// with Calico), while new connections of the same kind are dropped.
func liveConnection(t *testing.T, m *matrixLab) {
	allowAll := policyCase{name: "web admits everyone", yaml: gnp("web-live", `  selector: app == 'web'
  ingress:
  - action: Allow`), in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict { return allow })}
	m.applyPolicies(t, allowAll.yaml)
	m.converge(t, allowAll.name, allowAll.truth, caseTimeout)

	cli, web := m.node("cli-1"), m.node("web-2")
	var conn net.Conn
	if err := cli.ns.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(web.ip.String(), "8080"), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("cli-1 -> web-2:8080 under web-live: %v", err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	echo := func(msg string) error {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte(msg + "\n")); err != nil {
			return err
		}
		got, err := r.ReadString('\n')
		if err == nil && strings.TrimSpace(got) != msg {
			err = fmt.Errorf("echo %q, want %q", got, msg)
		}
		return err
	}
	if err := echo("before"); err != nil {
		t.Fatal(err)
	}

	denied := policyCase{name: "web-live updated: clients' TCP 8080 denied", yaml: gnp("web-live", `  selector: app == 'web'
  ingress:
  - action: Deny
    protocol: TCP
    source: {selector: app == 'client'}
    destination: {ports: [8080]}
  - action: Allow`), in: ingressTo(isApp("web"), func(src, dst *node, k kind) verdict {
		return allowIf(!(app(src, "client") && k == tcp8080))
	})}
	m.applyPolicies(t, denied.yaml)
	m.converge(t, denied.name, denied.truth, caseTimeout)
	if err := echo("after"); err != nil {
		t.Errorf("the live connection cli-1 -> web-2:8080 broke when its policy changed: %v", err)
	} else {
		t.Logf("live connection cli-1 -> web-2:8080 still echoes after the update; new ones are dropped (matrix above)")
	}
	m.applyPolicies(t, "")
}
