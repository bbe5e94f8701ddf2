package tcx

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// testNS makes a network namespace with n veth pairs (v0..v{n-1}, up) for
// one test and returns it with the veths' indexes; it goes at cleanup.
func testNS(tb testing.TB, n int) (netns.NsHandle, []int) {
	tb.Helper()
	name := fmt.Sprintf("ctcx%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatal(err)
	}
	ns, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		panic(serr) // this thread must not run on elsewhere
	}
	orig.Close()
	runtime.UnlockOSThread()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ns.Close()
		netns.DeleteNamed(name)
	})
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer h.Close()
	idx := make([]int, n)
	for i := range idx {
		la := netlink.NewLinkAttrs()
		la.Name = fmt.Sprintf("v%d", i)
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: fmt.Sprintf("p%d", i)}); err != nil {
			tb.Fatal(err)
		}
		l, err := h.LinkByName(la.Name)
		if err != nil {
			tb.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			tb.Fatal(err)
		}
		idx[i] = l.Attrs().Index
	}
	return ns, idx
}

// in runs f on a thread in ns.
func in(tb testing.TB, ns netns.NsHandle, f func() error) {
	tb.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked: it ends with this goroutine instead
		// of going back to the pool in ns.
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}

func testProg(tb testing.TB) *ebpf.Program {
	tb.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

func progID(tb testing.TB, p *ebpf.Program) ebpf.ProgramID {
	info, err := p.Info()
	if err != nil {
		tb.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// TestClsAttach: one filter of ours per interface, whatever was there; a
// new program takes the old one's place; copies go; detach leaves no
// filter and no qdisc of ours, and someone else's filter stays.
func TestClsAttach(t *testing.T) {
	ns, idx := testNS(t, 1)
	p1, p2 := testProg(t), testProg(t)
	id1, id2 := progID(t, p1), progID(t, p2)
	ifx := idx[0]
	dev := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: ifx}}
	attached := func() []ebpf.ProgramID {
		var ids []ebpf.ProgramID
		in(t, ns, func() (err error) { ids, err = ClsAttached(ifx, "ours"); return })
		return ids
	}
	if ids := attached(); len(ids) != 0 {
		t.Fatalf("before: %v", ids)
	}
	in(t, ns, func() error { return ClsAttach(ifx, "ours", 100, p1) })
	in(t, ns, func() error { return ClsAttach(ifx, "ours", 100, p1) }) // again: stays
	if ids := attached(); !slices.Equal(ids, []ebpf.ProgramID{id1}) {
		t.Fatalf("after attach: %v, want [%d]", ids, id1)
	}
	// A copy at another priority (an older build's) and someone else's
	// filter.
	in(t, ns, func() error {
		f := clsFilter(ifx, "ours", 7)
		f.Fd, f.DirectAction = p1.FD(), true
		if err := netlink.FilterAdd(f); err != nil {
			return err
		}
		g := clsFilter(ifx, "theirs", 200)
		g.Fd, g.DirectAction = p1.FD(), true
		return netlink.FilterAdd(g)
	})
	in(t, ns, func() error { return ClsAttach(ifx, "ours", 100, p2) })
	if ids := attached(); !slices.Equal(ids, []ebpf.ProgramID{id2}) {
		t.Fatalf("after replace: %v, want [%d]", ids, id2)
	}
	in(t, ns, func() error { return ClsDetach(ifx, "ours") })
	if ids := attached(); len(ids) != 0 {
		t.Fatalf("after detach: %v", ids)
	}
	var theirs []ebpf.ProgramID
	in(t, ns, func() (err error) { theirs, err = ClsAttached(ifx, "theirs"); return })
	if len(theirs) != 1 {
		t.Fatalf("someone else's filter: %v, want it kept", theirs)
	}
	in(t, ns, func() error { return ClsDetach(ifx, "theirs") })
	// The qdisc stays: deleting it from an interface that is up would
	// drop the interface's packets while the kernel regrafts.
	in(t, ns, func() error {
		qs, err := netlink.QdiscList(dev)
		for _, q := range qs {
			if q.Type() == "clsact" {
				return err
			}
		}
		return fmt.Errorf("clsact qdisc gone with the last filter: %v", qs)
	})
	// Gone interfaces and interfaces without a qdisc hold nothing of ours.
	in(t, ns, func() error { return ClsDetach(ifx, "ours") })
	in(t, ns, func() error { return ClsDetach(1<<30, "ours") })
}

// BenchmarkAttachIngress: attaching a program to a new interface's ingress
// with tcx and as a cls_bpf filter, and what that does to everyone else's
// netlink: link-add-ms is a veth pair's creation (p50), one every 2 ms
// meanwhile (tcx holds RTNL for a grace period per attach).
func BenchmarkAttachIngress(b *testing.B) {
	for _, how := range []string{"tcx", "cls_bpf"} {
		b.Run(how, func(b *testing.B) {
			ns, idx := testNS(b, b.N)
			prog := testProg(b)
			h, err := netlink.NewHandleAt(ns)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			var lat []time.Duration
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
					la := netlink.NewLinkAttrs()
					la.Name = fmt.Sprintf("d%d", i)
					t0 := time.Now()
					if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: fmt.Sprintf("e%d", i)}); err != nil {
						b.Error(err)
						return
					}
					lat = append(lat, time.Since(t0))
					if l, err := h.LinkByName(la.Name); err == nil {
						h.LinkDel(l)
					}
				}
			}()
			b.ResetTimer()
			in(b, ns, func() error {
				for i := 0; i < b.N; i++ {
					var err error
					if how == "tcx" {
						err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: idx[i], Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Tail()})
					} else {
						err = ClsAttach(idx[i], "bench", 100, prog)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
			b.StopTimer()
			close(stop)
			wg.Wait()
			if len(lat) > 0 {
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "link-add-ms")
			}
		})
	}
}
