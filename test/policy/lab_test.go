// Package policy is the conformance matrix of label policies (Calico v3
// GlobalNetworkPolicy and GlobalNetworkSet beside the seed's profiles), in
// the style of Kubernetes' NetworkPolicy conformance (cyclonus): on the
// namespace lab with the real binaries, etcd and kernel, three hosts and
// twelve labelled workloads, each case writes its policies and compares
// who reaches whom (TCP 80, TCP 8080, UDP 53 and ICMP echo, workloads and
// a network outside the cluster) with the truth table it expects, and
// prints both.
package policy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/resource"
	"github.com/calico-go/calico/internal/walkthrough"
)

// labPrefix names every namespace these tests make.
const labPrefix = "cpol"

func TestMain(m *testing.M) { e2etest.Main(m, labPrefix, nil) }

// node is a workload of the matrix, or the outside network (a destination only).
type node struct {
	name    string
	host    string
	profile string
	labels  map[string]string
	ns      *lab.Netns
	ip      netip.Addr
	outside bool
}

// The lab's workloads: four per host, labelled app (web, db, client,
// monitor), some with tier or team. lone-1 has no labels of its own and the
// profile "alone" (which admits only its own members); everyone else has
// "cluster" (admits cluster members, sends anywhere).
var workloads = []struct {
	name, host, ip, profile string
	labels                  map[string]string
}{
	{"web-1", "host1", "192.168.100.11", "cluster", map[string]string{"app": "web", "tier": "front"}},
	{"db-1", "host1", "192.168.100.12", "cluster", map[string]string{"app": "db", "tier": "back"}},
	{"cli-1", "host1", "192.168.100.13", "cluster", map[string]string{"app": "client"}},
	{"lone-1", "host1", "192.168.100.14", "alone", nil},
	{"web-2", "host2", "192.168.100.21", "cluster", map[string]string{"app": "web", "tier": "front"}},
	{"db-2", "host2", "192.168.100.22", "cluster", map[string]string{"app": "db", "tier": "back"}},
	{"cli-2", "host2", "192.168.100.23", "cluster", map[string]string{"app": "client"}},
	{"mon-2", "host2", "192.168.100.24", "cluster", map[string]string{"app": "monitor"}},
	{"web-3", "host3", "192.168.100.31", "cluster", map[string]string{"app": "web"}},
	{"db-3", "host3", "192.168.100.32", "cluster", map[string]string{"app": "db", "tier": "back"}},
	{"cli-3", "host3", "192.168.100.33", "cluster", map[string]string{"app": "client", "team": "x"}},
	{"mon-3", "host3", "192.168.100.34", "cluster", map[string]string{"app": "monitor"}},
}

// matrixLab is the world the cases share.
type matrixLab struct {
	w       *walkthrough.World
	applied map[string]string // what applyPolicies applied last: kind/name -> kind
	nodes   []*node           // the workloads, then the outside
	srcs    []*node           // the workloads
}

func newMatrixLab(t *testing.T) *matrixLab {
	t.Helper()
	w := e2etest.World(t, labPrefix, walkthrough.Options{}, false)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1 := w.Hosts[0]
	if _, err := w.AddHost(ctx, "host3", "10.0.0.3/24"); err != nil {
		t.Fatal(err)
	}
	ctl := func(h *lab.Host, args ...string) {
		t.Helper()
		if _, err := w.Ctl(ctx, h, args...); err != nil {
			t.Fatal(err)
		}
	}
	ctl(h1, "pool", "add", walkthrough.Pool, "--nat-outgoing")
	ctl(h1, "profile", "add", "cluster")
	ctl(h1, "profile", "add", "alone")
	m := &matrixLab{w: w}
	for _, wl := range workloads {
		h := w.Host(wl.host)
		got, err := w.AddWorkload(ctx, h, wl.name, wl.ip)
		if err != nil {
			t.Fatal(err)
		}
		ctl(h, "container", wl.name, "profile", "append", wl.profile)
		n := &node{name: wl.name, host: wl.host, profile: wl.profile, ns: got.Netns, ip: got.IP}
		m.setLabels(t, n, wl.labels)
		m.nodes = append(m.nodes, n)
		m.srcs = append(m.srcs, n)
	}
	m.nodes = append(m.nodes, &node{name: "outside", ns: w.Outside.Netns, ip: w.Outside.IP, outside: true})
	for _, n := range m.nodes {
		serve(t, n.ns)
	}
	return m
}

// applyPolicies makes the policies and network sets of yaml the only ones
// in the datastore, as a user would: `calicoctl apply -f FILE`, then
// `calicoctl delete KIND NAME` for what the previous case applied and this
// one does not have.
func (m *matrixLab) applyPolicies(t *testing.T, yaml string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h1 := m.w.Hosts[0]
	now := map[string]string{} // kind/name -> kind
	if strings.TrimSpace(yaml) != "" {
		rs, err := resource.Decode([]byte(yaml))
		if err != nil {
			t.Fatalf("policy YAML: %v", err)
		}
		for _, r := range rs {
			now[r.GetKind()+"/"+r.GetName()] = r.GetKind()
		}
		file := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := m.w.Ctl(ctx, h1, "apply", "-f", file); err != nil {
			t.Fatalf("calicoctl apply: %v: %s", err, out)
		}
	}
	for key, kind := range m.applied {
		if _, keep := now[key]; keep {
			continue
		}
		_, name, _ := strings.Cut(key, "/")
		if out, err := m.w.Ctl(ctx, h1, "delete", strings.ToLower(kind), name); err != nil {
			t.Fatalf("calicoctl delete %s %s: %v: %s", kind, name, err, out)
		}
	}
	m.applied = now
}

// setLabels makes labels a workload's own labels (the implicit
// projectcalico.org/... ones come with the record), as a user would:
// `calicoctl container NAME label add` and `label remove` on its host.
func (m *matrixLab) setLabels(t *testing.T, n *node, labels map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := m.w.Host(n.host)
	var add, remove []string
	for k, v := range labels {
		if old, ok := n.labels[k]; !ok || old != v {
			add = append(add, k+"="+v)
		}
	}
	for k := range n.labels {
		if _, ok := labels[k]; !ok {
			remove = append(remove, k)
		}
	}
	if len(add) > 0 {
		if out, err := m.w.Ctl(ctx, h, append([]string{"container", n.name, "label", "add"}, add...)...); err != nil {
			t.Fatalf("label add on %s: %v: %s", n.name, err, out)
		}
	}
	if len(remove) > 0 {
		if out, err := m.w.Ctl(ctx, h, append([]string{"container", n.name, "label", "remove"}, remove...)...); err != nil {
			t.Fatalf("label remove on %s: %v: %s", n.name, err, out)
		}
	}
	n.labels = labels
}

// Servers: TCP 80 and 8080 echo lines, UDP 53 echoes datagrams; ICMP echo
// is the kernel's.
func serve(t *testing.T, ns *lab.Netns) {
	t.Helper()
	for _, port := range []string{":80", ":8080"} {
		ln, err := ns.Listen("tcp4", port)
		if err != nil {
			t.Fatalf("listen %s in %s: %v", port, ns.Name, err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					buf := make([]byte, 512)
					for {
						n, err := c.Read(buf)
						if err != nil {
							return
						}
						c.Write(buf[:n])
					}
				}()
			}
		}()
	}
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", ":53")
		return err
	}); err != nil {
		t.Fatalf("udp listen in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// kind is one probe of a matrix cell.
type kind int

const (
	tcp80 kind = iota
	tcp8080
	udp53
	icmp
	nKinds
)

// kindLetters show a reached probe in a cell; '.' is a silent drop, '!'
// anything else (a refusal, an error), which is never what a case expects.
const kindLetters = "TPUI"

const legend = "cell: T = TCP 80, P = TCP 8080, U = UDP 53, I = ICMP echo; '.' dropped, '!' error; '-' self"

// probeTimeout is how long a probe waits: a drop is silent. Reachable
// probes answer in milliseconds; a case that sees a spurious drop under
// load probes again.
const probeTimeout = 800 * time.Millisecond

func probe(src, dst *node, k kind) byte {
	var err error
	switch k {
	case tcp80, tcp8080:
		port := uint16(80)
		if k == tcp8080 {
			port = 8080
		}
		err = e2etest.DialTCP(context.Background(), src.ns, netip.Addr{}, netip.AddrPortFrom(dst.ip, port), probeTimeout)
	case udp53:
		err = udpProbe(src.ns, netip.AddrPortFrom(dst.ip, 53))
	case icmp:
		err = icmpProbe(src.ns, src.ip, dst.ip)
	}
	var ne net.Error
	switch {
	case err == nil:
		return kindLetters[k]
	case errors.As(err, &ne) && ne.Timeout():
		return '.'
	}
	return '!'
}

func udpProbe(ns *lab.Netns, dst netip.AddrPort) error {
	var c *net.UDPConn
	if err := ns.Do(func() (err error) {
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write([]byte("probe")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	_, err := c.Read(buf)
	return err
}

var (
	icmpMu sync.Mutex
	icmpID uint16
)

// icmpProbe sends one echo request from ns and waits for its reply, on a
// raw socket of its own (every raw socket sees every reply, so the reply
// is recognised by source and identifier).
func icmpProbe(ns *lab.Netns, src, dst netip.Addr) error {
	var c net.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("ip4:icmp", src.String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	// A fresh identifier per probe: conntrack keys echo flows by it, and an
	// old flow's identifier would be let through as established.
	icmpMu.Lock()
	icmpID++
	id, seq := icmpID, uint16(1)
	icmpMu.Unlock()
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'm', 'x'}
	sum := icmpChecksum(msg)
	msg[2], msg[3] = byte(sum>>8), byte(sum)
	c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.WriteTo(msg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		a, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if n >= 8 && buf[0] == 0 && a.Unmap() == dst && uint16(buf[4])<<8|uint16(buf[5]) == id && uint16(buf[6])<<8|uint16(buf[7]) == seq {
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// matrix holds one cell per (source, destination): a letter per probe kind
// that got through.
type matrix [][]string

// observe probes every cell, in parallel.
func (m *matrixLab) observe() matrix {
	out := make(matrix, len(m.srcs))
	cells := make([][][nKinds]byte, len(m.srcs))
	sem := make(chan struct{}, 160)
	var wg sync.WaitGroup
	for i, src := range m.srcs {
		out[i] = make([]string, len(m.nodes))
		cells[i] = make([][nKinds]byte, len(m.nodes))
		for j, dst := range m.nodes {
			if src == dst {
				continue
			}
			for k := kind(0); k < nKinds; k++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					cells[i][j][k] = probe(src, dst, k)
					<-sem
				}()
			}
		}
	}
	wg.Wait()
	for i := range out {
		for j := range out[i] {
			if m.srcs[i] == m.nodes[j] {
				out[i][j] = "-"
				continue
			}
			out[i][j] = string(cells[i][j][:])
		}
	}
	return out
}

// expectation is a case's truth: does a probe of kind k from src reach dst?
type expectation func(src, dst *node, k kind) bool

func (m *matrixLab) expected(e expectation) matrix {
	out := make(matrix, len(m.srcs))
	for i, src := range m.srcs {
		out[i] = make([]string, len(m.nodes))
		for j, dst := range m.nodes {
			if src == dst {
				out[i][j] = "-"
				continue
			}
			var b [nKinds]byte
			for k := kind(0); k < nKinds; k++ {
				b[k] = '.'
				if e(src, dst, k) {
					b[k] = kindLetters[k]
				}
			}
			out[i][j] = string(b[:])
		}
	}
	return out
}

func (a matrix) equal(b matrix) bool {
	for i := range a {
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				return false
			}
		}
	}
	return true
}

// format prints a matrix: rows are sources, columns destinations; with
// against, cells that differ from it are marked '*'.
func (m *matrixLab) format(x, against matrix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s", "from\\to")
	for _, n := range m.nodes {
		fmt.Fprintf(&b, " %-7s", n.name)
	}
	b.WriteByte('\n')
	for i, src := range m.srcs {
		fmt.Fprintf(&b, "%-8s", src.name)
		for j := range m.nodes {
			mark := " "
			if against != nil && x[i][j] != against[i][j] {
				mark = "*"
			}
			fmt.Fprintf(&b, " %-6s%s", x[i][j], mark)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// converge probes until the observed matrix equals the expected one twice
// in a row (so a matrix that merely has not changed yet cannot pass
// alone), or d passes, and prints both.
func (m *matrixLab) converge(t *testing.T, name string, e expectation, d time.Duration) {
	t.Helper()
	want := m.expected(e)
	start := time.Now()
	var got matrix
	matches := 0
	for time.Since(start) < d {
		got = m.observe()
		if got.equal(want) {
			matches++
			if matches == 2 {
				break
			}
			continue
		}
		matches = 0
	}
	t.Logf("%s (%s)\nexpected:\n%sobserved (after %v):\n%s", name, legend, m.format(want, nil), time.Since(start).Round(100*time.Millisecond), m.format(got, want))
	if matches < 2 {
		t.Errorf("%s: observed matrix differs from the expected one in the cells marked '*' after %v", name, d)
	}
}
