package fastpath

import (
	"context"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/dataplane/tcx"
	"github.com/calico-go/calico/internal/lab"
)

// kernelState is what the kernel holds of the fast path in ns: the
// entries of fp_ifaces and fp_wl_src (as interface name and address), and
// the workload interfaces fp_from_wl is attached to.
type kernelState struct {
	ifaces   map[string]uint32
	src      map[string]bool // "iface addr"
	attached map[string]bool
}

func readKernelState(t *testing.T, ns *lab.Netns, m *Manager) kernelState {
	t.Helper()
	ks := kernelState{ifaces: map[string]uint32{}, src: map[string]bool{}, attached: map[string]bool{}}
	err := ns.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		names := map[uint32]string{}
		for _, l := range links {
			names[uint32(l.Attrs().Index)] = l.Attrs().Name
			if ids, _ := tcx.ClsAttached(l.Attrs().Index, progWL); len(ids) > 0 {
				ks.attached[l.Attrs().Name] = true
			}
		}
		var k, v uint32
		it := m.objs.FpIfaces.Iterate()
		for it.Next(&k, &v) {
			ks.ifaces[names[k]] = v
		}
		if err := it.Err(); err != nil {
			return err
		}
		var sk fastpathWlSrcKey
		it = m.objs.FpWlSrc.Iterate()
		for it.Next(&sk, &v) {
			b := [4]byte{byte(sk.Addr), byte(sk.Addr >> 8), byte(sk.Addr >> 16), byte(sk.Addr >> 24)}
			ks.src[names[sk.Ifindex]+" "+netip.AddrFrom4(b).String()] = true
		}
		return it.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestApplyChange: the endpoint pass's ApplyChange leaves the kernel as a
// whole Apply of the same desired state does. Above all a source that
// leaves a running workload (the address then taken by a new one on the
// same host) leaves fp_wl_src under the old holder's interface: kept
// there, that workload could forge it on the new holder's established
// flows past the ruleset's anti-spoofing. Also: a workload gone while its
// veth stays loses its program and entries, a veth made again under the
// same name (a new index) gets them on the new index and none stay on the
// old, a wanted interface that does not exist gets nothing, and there is
// nothing to change from before a whole Apply, after a teardown or for
// another host address.
func TestApplyChange(t *testing.T) {
	ns, ip := sysHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(argv ...string) {
		t.Helper()
		if out, err := ns.Run(ctx, argv...); err != nil {
			t.Fatalf("%v: %v: %s", argv, err, out)
		}
	}
	for _, n := range []string{"calic0", "calic1", "calic2", "calic3"} {
		run("ip", "link", "add", n, "type", "veth", "peer", "name", "p"+n)
		run("ip", "link", "set", n, "up")
	}
	addr := netip.MustParseAddr
	x0, x1, x2, x9 := addr("10.88.0.10"), addr("10.88.0.11"), addr("10.88.0.12"), addr("10.88.0.19")
	wl := func(n string, as ...netip.Addr) Workload { return Workload{Iface: n, Addrs: as} }

	m := New()
	defer func() {
		_ = ns.Do(func() error { return m.Apply(Desired{}) })
		m.Close()
	}()
	change := func(ifaces []string, now ...Workload) bool {
		t.Helper()
		var done bool
		if err := ns.Do(func() (err error) { done, err = m.ApplyChange(ip, ifaces, now); return err }); err != nil {
			t.Fatalf("ApplyChange(%v): %v", ifaces, err)
		}
		return done
	}
	whole := func(ws ...Workload) {
		t.Helper()
		if err := ns.Do(func() error { return m.Apply(Desired{Enabled: true, LocalIP: ip, Workloads: ws}) }); err != nil {
			t.Fatal(err)
		}
	}
	// expect compares the kernel with what a whole Apply of ws makes: the
	// state after the change, then (Apply again) the whole one.
	expect := func(step string, ws ...Workload) {
		t.Helper()
		got := readKernelState(t, ns, m)
		whole(ws...)
		want := readKernelState(t, ns, m)
		if !maps.Equal(got.ifaces, want.ifaces) || !maps.Equal(got.src, want.src) || !maps.Equal(got.attached, want.attached) {
			t.Fatalf("%s: after ApplyChange the kernel holds\n %+v\nwhere a whole Apply makes\n %+v", step, got, want)
		}
	}

	if change([]string{"calic0"}, wl("calic0", x0)) {
		t.Fatal("ApplyChange served a manager that never applied the whole state")
	}
	whole(wl("calic0", x0), wl("calic1", x1), wl("calic2", x2))
	if change([]string{"calic0"}, wl("calic0", x0)) != true {
		t.Fatal("ApplyChange declined after a whole Apply")
	}
	var done bool
	if err := ns.Do(func() (err error) {
		done, err = m.ApplyChange(addr("10.77.0.9"), []string{"calic0"}, []Workload{wl("calic0", x0)})
		return err
	}); err != nil || done {
		t.Fatalf("ApplyChange for another host address: served %v, err %v; want a whole Apply asked for", done, err)
	}

	// x1 leaves calic1 (which keeps running with x9) for the new calic3;
	// calic2's record goes while its veth stays.
	if !change([]string{"calic1", "calic2", "calic3"}, wl("calic1", x9), wl("calic3", x1)) {
		t.Fatal("declined")
	}
	st := readKernelState(t, ns, m)
	if st.src["calic1 "+x1.String()] {
		t.Fatalf("fp_wl_src still lets calic1 send from %s, which calic3 holds now: %v", x1, st.src)
	}
	if !st.src["calic3 "+x1.String()] || !st.src["calic1 "+x9.String()] || !st.attached["calic3"] || st.attached["calic2"] || st.src["calic2 "+x2.String()] {
		t.Fatalf("after the change: %+v", st)
	}
	expect("address moved, record gone", wl("calic0", x0), wl("calic1", x9), wl("calic3", x1))

	// calic3 made again: a new index.
	run("ip", "link", "del", "calic3")
	run("ip", "link", "add", "calic3", "type", "veth", "peer", "name", "pcalic3")
	if !change([]string{"calic3"}, wl("calic3", x1)) {
		t.Fatal("declined")
	}
	expect("veth made again", wl("calic0", x0), wl("calic1", x9), wl("calic3", x1))

	// A workload whose interface is not there (yet).
	if !change([]string{"calic4"}, wl("calic4", x2)) {
		t.Fatal("declined")
	}
	expect("no interface", wl("calic0", x0), wl("calic1", x9), wl("calic3", x1), wl("calic4", x2))

	// After a teardown there is nothing to change from.
	if err := ns.Do(func() error { return m.Apply(Desired{}) }); err != nil {
		t.Fatal(err)
	}
	if change([]string{"calic0"}, wl("calic0", x0)) {
		t.Fatal("ApplyChange served a manager whose fast path was taken down")
	}
}
