package fastpath

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/lab"
)

const (
	sysLiberal = "net.netfilter.nf_conntrack_tcp_be_liberal"
	sysEstab   = "net.netfilter.nf_conntrack_tcp_timeout_established"
)

// sysHost is a namespace with an uplink holding its address: all a
// Manager needs to attach to, and its own conntrack sysctls.
func sysHost(t testing.TB) (*lab.Netns, netip.Addr) {
	t.Helper()
	l, err := lab.New(labPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ns, err := l.AddNetns("sys")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, argv := range [][]string{
		{"ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1"}, // no dummy module here
		{"ip", "addr", "add", "10.77.0.1/24", "dev", "up0"},
		{"ip", "link", "set", "up0", "up"},
	} {
		if out, err := ns.Run(ctx, argv...); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	return ns, netip.MustParseAddr("10.77.0.1")
}

func sysctl(t *testing.T, ns *lab.Netns, key string) string {
	t.Helper()
	v, err := ns.Sysctl(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func setSysctl(t *testing.T, ns *lab.Netns, key, v string) {
	t.Helper()
	if err := ns.SetSysctl(key, v); err != nil {
		t.Fatal(err)
	}
}

func apply(t *testing.T, ns *lab.Netns, m *Manager, ip netip.Addr, on bool) {
	t.Helper()
	if err := ns.Do(func() error { return m.Apply(Desired{Enabled: on, LocalIP: ip}) }); err != nil {
		t.Fatalf("Apply(on=%v): %v", on, err)
	}
}

// TestLiberalRestored: the fast path sets nf_conntrack_tcp_be_liberal to
// 1 while on and, when it goes, puts back the operator's value: 0 back to
// 0, an operator's 1 left at 1 (teardown used to write 0 over it), also
// when the agent that turned it on was restarted in between (the value is
// kept with the programs), and the operator's latest value when it was
// changed while the fast path was on.
func TestLiberalRestored(t *testing.T) {
	ns, ip := sysHost(t)
	cases := []struct {
		name     string
		operator string
		restart  bool // a new Manager (a restarted agent) turns it off
		later    string
		want     string
	}{
		{"operator 0", "0", false, "", "0"},
		{"operator 1", "1", false, "", "1"},
		{"operator 0, agent restarted", "0", true, "", "0"},
		{"operator 1, agent restarted", "1", true, "", "1"},
		{"operator 1, set to 0 by the operator while on", "1", false, "0", "0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setSysctl(t, ns, sysLiberal, c.operator)
			m := New()
			defer m.Close()
			apply(t, ns, m, ip, true)
			if got := sysctl(t, ns, sysLiberal); got != "1" {
				t.Fatalf("while on: %s = %s, want 1", sysLiberal, got)
			}
			if c.later != "" {
				// The operator writes while the fast path is on; the next
				// Apply needs 1 again, and remembers the new value.
				setSysctl(t, ns, sysLiberal, c.later)
				apply(t, ns, m, ip, true)
				if got := sysctl(t, ns, sysLiberal); got != "1" {
					t.Fatalf("on again: %s = %s, want 1", sysLiberal, got)
				}
			}
			if c.restart {
				m.Close() // the programs and fp_config stay, as when the agent exits
				m = New()
				defer m.Close()
			}
			apply(t, ns, m, ip, false)
			if got := sysctl(t, ns, sysLiberal); got != c.want {
				t.Errorf("after teardown: %s = %s, want %s", sysLiberal, got, c.want)
			}
		})
	}
}

// TestLiberalAcrossIdle: a Manager whose last workload went keeps its
// programs loaded (the next first workload does not wait for the
// verifier), but nothing it saved before may outlive the teardown: the
// operator turns the window check on while the fast path is off, the fast
// path comes and goes again, and the operator's 1 must stay (a saved 0
// left from the first round would be written over it). The programs are
// the same objects both times and attached nowhere in between.
func TestLiberalAcrossIdle(t *testing.T) {
	ns, ip := sysHost(t)
	setSysctl(t, ns, sysLiberal, "0")
	m := New()
	defer m.Close()
	apply(t, ns, m, ip, true)
	first := m.objs
	apply(t, ns, m, ip, false)
	if got := sysctl(t, ns, sysLiberal); got != "0" {
		t.Fatalf("after the first teardown: %s = %s, want the operator's 0", sysLiberal, got)
	}
	if m.objs == nil || !m.idle {
		t.Fatalf("after a teardown for want of workloads: objects %v, idle %v; want them kept, idle", m.objs, m.idle)
	}
	ns.Do(func() error {
		if p := ourProgs(upIndex(t)); len(p) > 0 {
			t.Errorf("idle: %v still attached", p)
		}
		return nil
	})
	setSysctl(t, ns, sysLiberal, "1")
	apply(t, ns, m, ip, true)
	if m.objs != first {
		t.Errorf("the second Apply loaded new objects: want the idle ones reused")
	}
	ns.Do(func() error {
		if p := ourProgs(upIndex(t)); len(p[progUplink]) != 1 {
			t.Errorf("on again: uplink programs %v, want %s", p, progUplink)
		}
		return nil
	})
	apply(t, ns, m, ip, false)
	if got := sysctl(t, ns, sysLiberal); got != "1" {
		t.Errorf("after the second teardown: %s = %s, want the operator's 1", sysLiberal, got)
	}
}

// upIndex is sysHost's uplink's index, in the calling thread's namespace.
func upIndex(t *testing.T) int {
	l, err := netlink.LinkByName("up0")
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// TestTimeoutFromSysctl: the timeout the programs refresh a flow's entry
// to is the host's nf_conntrack_tcp_timeout_established, read again on
// every Apply, not a fixed five days.
func TestTimeoutFromSysctl(t *testing.T) {
	ns, ip := sysHost(t)
	m := New()
	defer m.Close()
	defer apply(t, ns, m, ip, false)
	for _, secs := range []string{"3600", "7200"} {
		setSysctl(t, ns, sysEstab, secs)
		apply(t, ns, m, ip, true)
		var ms uint32
		m.mu.Lock()
		err := m.objs.FpConfig.Lookup(configCTEstablishedMS, &ms)
		m.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]uint32{"3600": 3_600_000, "7200": 7_200_000}[secs]; ms != want {
			t.Errorf("%s=%s: the programs refresh to %d ms, want %d", sysEstab, secs, ms, want)
		}
	}
}
