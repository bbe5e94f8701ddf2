package fastpath

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// sink listens on addr in ns and reads whatever comes, until the test ends.
func sink(t *testing.T, ns *lab.Netns, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
}

// dialFrom opens a TCP connection from src in ns to dst and writes to it,
// then waits for the handshake's last ACK to make the entry assured.
func dialFrom(t *testing.T, ctx context.Context, ns *lab.Netns, src, dst netip.AddrPort) {
	t.Helper()
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(src), Timeout: 3 * time.Second}
		conn, err = d.DialContext(ctx, "tcp4", dst.String())
		return err
	}); err != nil {
		t.Fatalf("honest connection %s -> %s: %v", src, dst, err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
}

// TestAgentFastPathAddressReuse: an address leaves a live workload and
// goes to a new one on the same host, through the agents' incremental
// endpoint passes (no periodic full pass within the test: the resync
// interval is an hour). The former holder, still running on its
// interface (which keeps its fast-path program), forges its old address
// on the new holder's established flow. The ruleset's anti-spoofing drops
// that; the fast path must not carry it: its fp_wl_src must lose the
// address with the ruleset's wl-src4, on the endpoint pass too. Honest
// segments of the new holder's flow arrive, and its interface gets the
// fast path.
func TestAgentFastPathAddressReuse(t *testing.T) {
	t.Setenv("CALICO_FASTPATH", "on") // `calicoctl node` passes it on to calico-node
	fw := newWorldWith(t, walkthrough.Options{NodeArgs: []string{"--resync-interval", "1h"}}, []wlSpec{
		{"fp-a1", 0, "192.168.100.1", true},  // the former holder of .1, then the attacker
		{"fp-b1", 1, "192.168.100.65", true}, // the server
	})
	ctx := e2etest.Ctx(t, 4*time.Minute)
	w := fw.w
	h1 := fw.hosts[0]
	a1, b1 := fw.wls["fp-a1"], fw.wls["fp-b1"]
	// The agents serve container changes with endpoint passes once their
	// start-up is over: BGP established, then 2 s (holdingRoutes).
	for _, h := range fw.hosts {
		e2etest.WaitFor(t, 60*time.Second, h.Label+"'s BGP session up", func() (bool, string) {
			out, err := w.Ctl(ctx, h.Host, "status")
			return err == nil && strings.Contains(out, "Established"), out
		})
	}
	time.Sleep(4 * time.Second)
	e2etest.WaitFor(t, 15*time.Second, "host1's agent attaches the fast path to "+a1.iface, func() (bool, string) {
		p := progsOn(t, h1.Host, a1.iface)
		return len(p[progWL]) == 1, fmt.Sprint(p)
	})

	// .1 leaves a1, which keeps running with .3: the record edit and the
	// release in one etcd transaction, as an orchestrator's burst of
	// writes arrives in one pass (the endpoint pass serves it). Then .1
	// goes to a new workload c1.
	if _, err := w.Ctl(ctx, h1.Host, "container", "fp-a1", "ip", "add", "192.168.100.3"); err != nil {
		t.Fatal(err)
	}
	releaseInOneTxn(t, ctx, fw, h1, "fp-a1", a1.IP)
	time.Sleep(time.Second)
	// c1 with its profile in one record (a profile appended later is a
	// record edit of its own, served by a full pass).
	ns, err := w.Lab.AddWorkloadNetns(h1.Host, "fp-c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h1.Host, "container", "add", "fp-c1", "192.168.100.1", "--netns", ns.Path, "--profile", "FP"); err != nil {
		t.Fatal(err)
	}
	cw := &walkthrough.Workload{Name: "fp-c1", Host: h1.Host, Netns: ns, IP: a1.IP}
	c1 := &fpWL{Workload: cw, host: h1, iface: ifaceTo(t, h1, cw.IP)}
	if c1.iface == a1.iface {
		t.Fatalf("c1 and a1 share interface %s", c1.iface)
	}

	// c1's established flow from .1:41000 to b1:7100.
	dst := netip.AddrPortFrom(b1.IP, 7100)
	sink(t, b1.Netns, dst)
	victim := netip.AddrPortFrom(cw.IP, 41000)
	e2etest.WaitFor(t, 15*time.Second, "c1 reaches b1", func() (bool, string) {
		ok, detail := walkthrough.Probe(ctx, c1.Netns, b1.IP, true)
		return ok, detail
	})
	dialFrom(t, ctx, c1.Netns, victim, dst)
	sn := newSniffer(t, b1.Netns, "HONEST-MARK", "SPOOF-MARK")

	// a1 forges its former address on c1's flow.
	if err := sendTCP(a1.Netns, victim, dst, "SPOOF-MARK", 5); err != nil {
		t.Fatal(err)
	}
	// c1's own segments on its flow arrive: the sniffer works.
	if err := sendTCP(c1.Netns, victim, dst, "HONEST-MARK", 5); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 5*time.Second, "honest segments arrive", func() (bool, string) {
		return sn.count("HONEST-MARK") == 5, fmt.Sprintf("%d arrived", sn.count("HONEST-MARK"))
	})
	time.Sleep(500 * time.Millisecond)
	if n := sn.count("SPOOF-MARK"); n != 0 {
		t.Errorf("the former holder of %s forged it on the new holder's flow: %d of 5 segments arrived", cw.IP, n)
	}
	// The new workload's interface gets the fast path on the endpoint pass.
	if p := progsOn(t, h1.Host, c1.iface); len(p[progWL]) != 1 {
		t.Errorf("host1 %s (the new workload): programs %v, want one %s", c1.iface, p, progWL)
	}
}

// releaseInOneTxn takes addr from workload name on h: its endpoint record,
// its IPAM block and handle, in one etcd transaction (and off its
// interface).
func releaseInOneTxn(t *testing.T, ctx context.Context, fw *fpWorld, h *fpHost, name string, addr netip.Addr) {
	t.Helper()
	cli := e2etest.EtcdFrom(t, h.Host, fw.w.Etcd)
	node := h.Label
	epKey := datastore.EndpointKey(node, name)
	get := func(key string, v any) {
		r, err := cli.Get(ctx, key)
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("get %s: %v (%d records)", key, err, len(r.Kvs))
		}
		if err := json.Unmarshal(r.Kvs[0].Value, v); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	var ep api.Endpoint
	get(epKey, &ep)
	ep.IPv4Nets = slices.DeleteFunc(ep.IPv4Nets, func(n string) bool { return n == addr.String()+"/32" || n == addr.String() })
	handleID := api.WorkloadHandle(node, name)
	var hd api.Handle
	get(datastore.HandleKey(handleID), &hd)
	hd.IPs = slices.DeleteFunc(hd.IPs, func(n string) bool { return n == addr.String() || n == addr.String()+"/32" })
	blocks, err := cli.Get(ctx, datastore.PrefixBlocks, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var blockKey string
	var b api.Block
	for _, kv := range blocks.Kvs {
		var cand api.Block
		if json.Unmarshal(kv.Value, &cand) != nil {
			continue
		}
		if p, err := netip.ParsePrefix(cand.CIDR); err == nil && p.Contains(addr) {
			blockKey, b = string(kv.Key), cand
			ord := int(addr.As4()[3]) - int(p.Masked().Addr().As4()[3])
			if b.Allocations[ord] != handleID {
				t.Fatalf("block %s: %s is held by %q, not %q", cand.CIDR, addr, b.Allocations[ord], handleID)
			}
			delete(b.Allocations, ord)
		}
	}
	if blockKey == "" {
		t.Fatalf("no block holds %s", addr)
	}
	put := func(key string, v any) clientv3.Op {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return clientv3.OpPut(key, string(j))
	}
	if _, err := cli.Txn(ctx).Then(put(epKey, ep), put(blockKey, b), put(datastore.HandleKey(handleID), hd)).Commit(); err != nil {
		t.Fatal(err)
	}
}
