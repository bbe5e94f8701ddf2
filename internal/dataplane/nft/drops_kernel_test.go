package nft

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/nflog"
)

// TestKernelDrops: a ping a deny rule stops and a TCP connection no rule
// allows are counted against the rule and the endpoint that dropped them,
// and logged to DropLogGroup with their headers; rewriting the profile's
// chain (which restarts the kernel's counters) loses nothing counted.
func TestKernelDrops(t *testing.T) {
	requireKernel(t)
	l := newLab(t)
	w1 := l.addWorkload("w1", "10.65.0.1", "fd00::1")
	w2 := l.addWorkload("w2", "10.65.0.2", "fd00::2")
	listen(t, w2.ns, ":8080")
	icmp := api.ProtocolICMP
	pol := func(extra ...api.Rule) calc.Policy {
		return calc.Policy{
			Endpoints: []calc.EndpointPolicy{
				{Interface: w1.iface, Addrs: []netip.Addr{w1.ip4}, Profiles: []string{"web"}},
				{Interface: w2.iface, Addrs: []netip.Addr{w2.ip4}, Profiles: []string{"web"}},
			},
			Profiles: map[string]api.Profile{"web": {Name: "web",
				Inbound: append([]api.Rule{
					{Action: api.ActionDeny, Protocol: icmp},
					{Action: api.ActionAllow, Protocol: api.ProtocolTCP, Dst: api.EntityMatch{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}},
				}, extra...),
				Outbound: []api.Rule{{Action: api.ActionAllow}},
			}},
		}
	}
	h := newHostEnforcer(t, l.host)
	defer h.cleanup()
	h.apply(pol())
	names := NewDropNames(pol())

	var mu sync.Mutex
	var logged []nflog.Packet
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runIn(l.host, func() error {
			return nflog.Listen(ctx, DropLogGroup, DropSnapLen, func(p nflog.Packet) {
				mu.Lock()
				logged = append(logged, p)
				mu.Unlock()
			})
		})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("nflog: %v", err)
		}
	}()
	time.Sleep(200 * time.Millisecond) // bound before the first drop

	expect(t, "w1 -> w2 ping (denied by web inbound rule 1)", false, l.ping(w1.ns, netip.Addr{}, w2.ip4))
	expect(t, "w1 -> w2 tcp 8080 (allowed)", true, l.tcp(w1.ns, w2.ip4, 8080))
	expect(t, "w1 -> w2 tcp 9090 (no rule allows it)", false, l.tcp(w1.ns, w2.ip4, 9090))

	c := NewDropCounter()
	out := map[DropSource]Count{} // running totals
	poll := func() map[DropSource]Count {
		t.Helper()
		var grown map[string]Count
		if err := runIn(l.host, func() (err error) {
			grown, err = c.Poll(context.Background())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for prefix, n := range grown {
			s, ok := names.Source(prefix)
			if !ok {
				t.Errorf("counter %q names no chain of the policy", prefix)
			}
			o := out[s]
			o.Packets += n.Packets
			o.Bytes += n.Bytes
			out[s] = o
		}
		return out
	}
	denyRule := DropSource{Direction: "inbound", Profile: "web", Rule: 1}
	final := DropSource{Direction: "inbound", Endpoint: w2.iface}
	got := poll()
	if got[denyRule].Packets < 1 || got[final].Packets < 1 {
		t.Fatalf("drop counters %v: want the ping under %+v and the tcp SYNs under %+v", got, denyRule, final)
	}
	t.Logf("FIGURE: drop counters after one denied ping and one refused tcp connect: %+v", got)

	// Rewrite the profile's chains: the kernel's counter of rule 1 restarts.
	before := got[denyRule].Packets
	h.apply(pol(api.Rule{Action: api.ActionAllow, Protocol: api.ProtocolUDP}))
	expect(t, "w1 -> w2 ping after the rewrite", false, l.ping(w1.ns, netip.Addr{}, w2.ip4))
	if after := poll()[denyRule].Packets; after <= before {
		t.Errorf("rule 1 drops: %d after the rewrite and one more ping, %d before: want more", after, before)
	}

	mu.Lock()
	defer mu.Unlock()
	var sawPing, sawSYN bool
	for _, p := range logged {
		s, ok := names.Source(p.Prefix)
		if !ok || len(p.Payload) < 20 {
			t.Errorf("logged packet with prefix %q, %d bytes", p.Prefix, len(p.Payload))
			continue
		}
		src, dst := netip.AddrFrom4([4]byte(p.Payload[12:16])), netip.AddrFrom4([4]byte(p.Payload[16:20]))
		if src != w1.ip4 || dst != w2.ip4 {
			continue
		}
		sawPing = sawPing || (s == denyRule && p.Payload[9] == 1)
		sawSYN = sawSYN || (s == final && p.Payload[9] == 6)
	}
	if !sawPing || !sawSYN {
		t.Errorf("NFLOG group %d: ping logged %v, tcp SYN logged %v (of %d packets)", DropLogGroup, sawPing, sawSYN, len(logged))
	}
}
