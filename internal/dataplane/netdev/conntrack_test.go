package netdev

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ctFlow is a UDP conntrack entry: original src -> dst, reply rsrc -> rdst
// (the reply differs from the mirror image under NAT).
type ctFlow struct{ src, dst, rsrc, rdst string }

func (f ctFlow) create(t *testing.T, h *netlink.Handle) {
	t.Helper()
	s, d, rs, rd := addr(f.src), addr(f.dst), addr(f.rsrc), addr(f.rdst)
	fam := uint8(unix.AF_INET)
	if s.Is6() {
		fam = unix.AF_INET6
	}
	flow := &netlink.ConntrackFlow{FamilyType: fam, TimeOut: 600,
		Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IP(s.AsSlice()), DstIP: net.IP(d.AsSlice()), SrcPort: 1000, DstPort: 2000},
		Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IP(rs.AsSlice()), DstIP: net.IP(rd.AsSlice()), SrcPort: 2000, DstPort: 1000}}
	if err := h.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(fam), flow); err != nil {
		t.Fatalf("create conntrack entry %v: %v", f, err)
	}
}

// ctList is every entry's original source and destination, as "src>dst".
func ctList(t *testing.T, h *netlink.Handle) []string {
	t.Helper()
	var out []string
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			out = append(out, f.Forward.SrcIP.String()+">"+f.Forward.DstIP.String())
		}
	}
	sort.Strings(out)
	return out
}

// The entries of an address that leaves a local workload go, in either
// direction and as source, destination or NAT target, IPv4 and IPv6; those
// of other addresses stay; nothing is owed on the first Note or twice.
// Both ways of finding them: the kernel's filtered dumps (which this
// kernel must honour) and one whole dump.
func TestEndpointConntrack(t *testing.T) {
	for _, whole := range []bool{false, true} {
		t.Run(fmt.Sprintf("whole=%v", whole), func(t *testing.T) { testEndpointConntrack(t, whole) })
	}
}

func testEndpointConntrack(t *testing.T, whole bool) {
	_, path := newNetns(t, "ct")
	h, err := openHandleFamily(path, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, f := range []ctFlow{
		{"10.1.0.5", "10.9.9.9", "10.9.9.9", "10.1.0.5"},   // the workload's outbound flow
		{"10.9.9.9", "10.1.0.5", "10.1.0.5", "10.9.9.9"},   // a peer's flow into it
		{"10.9.9.8", "192.0.2.1", "10.1.0.5", "10.9.9.8"},  // DNAT to it: only the reply names it
		{"10.9.9.9", "10.1.0.7", "10.1.0.7", "10.9.9.9"},   // another workload's
		{"fd00::5", "fd00::99", "fd00::99", "fd00::5"},     // IPv6, the workload's
		{"fd00::99", "fd00::7", "fd00::7", "fd00::99"},     // IPv6, another's
		{"10.9.9.9", "10.1.0.50", "10.1.0.50", "10.9.9.9"}, // no workload's: not ours to touch
	} {
		f.create(t, h)
	}
	ct := NewEndpointConntrack(InNetns(path))
	defer ct.Close()
	if ct.ct, err = openConntrack(path); err != nil {
		t.Fatal(err)
	}
	ct.ct.unfiltered = whole
	defer func() {
		if !whole && ct.ct.unfiltered {
			t.Error("the kernel did not honour the filtered dumps (Linux 5.8+ does)")
		}
	}()
	a5, a7, b5, b7 := addr("10.1.0.5"), addr("10.1.0.7"), addr("fd00::5"), addr("fd00::7")

	ct.Note(map[netip.Addr]string{a5: "caliA", b5: "caliA", a7: "caliB", b7: "caliB"})
	if n, addrs, err := ct.Flush(); n != 0 || len(addrs) != 0 || err != nil {
		t.Fatalf("first Note owes nothing; Flush = %d %v %v", n, addrs, err)
	}
	// A removed.
	ct.Note(map[netip.Addr]string{a7: "caliB", b7: "caliB"})
	if got := ct.Owed(); !slices.Equal(got, []netip.Addr{a5, b5}) {
		t.Fatalf("owed %v, want %v", got, []netip.Addr{a5, b5})
	}
	n, addrs, err := ct.Flush()
	if err != nil || n != 4 || !slices.Equal(addrs, []netip.Addr{a5, b5}) {
		t.Fatalf("Flush = %d %v %v, want 4 entries of %v", n, addrs, err, []netip.Addr{a5, b5})
	}
	want := []string{"10.9.9.9>10.1.0.50", "10.9.9.9>10.1.0.7", "fd00::99>fd00::7"}
	if got := ctList(t, h); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	// Idempotent: the same state again owes nothing.
	ct.Note(map[netip.Addr]string{a7: "caliB", b7: "caliB"})
	if n, addrs, err := ct.Flush(); n != 0 || len(addrs) != 0 || err != nil {
		t.Fatalf("unchanged Note: Flush = %d %v %v", n, addrs, err)
	}
	// 10.1.0.7 moves to another workload: flushed before the routes
	// (FlushMoved, still owed) and after (Flush).
	ct.Note(map[netip.Addr]string{a7: "caliC", b7: "caliB"})
	if n, addrs, err := ct.FlushMoved(); err != nil || n != 1 || !slices.Equal(addrs, []netip.Addr{a7}) {
		t.Fatalf("FlushMoved = %d %v %v, want 1 entry of %s", n, addrs, err, a7)
	}
	if got := ct.Owed(); !slices.Equal(got, []netip.Addr{a7}) {
		t.Fatalf("after FlushMoved owed %v, want %s", got, a7)
	}
	if n, addrs, err := ct.Flush(); err != nil || n != 0 || !slices.Equal(addrs, []netip.Addr{a7}) {
		t.Fatalf("Flush after FlushMoved = %d %v %v", n, addrs, err)
	}
	if got := ct.Owed(); len(got) != 0 {
		t.Fatalf("owed %v after a clean Flush", got)
	}
	want = []string{"10.9.9.9>10.1.0.50", "fd00::99>fd00::7"}
	if got := ctList(t, h); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
}

// A starting agent owes a flush to the local addresses the kernel does not
// route to their interface yet, before the routes too, and to the free
// addresses it is given; WorkloadRoutes finds the workload routes an
// agent left, and nothing else.
func TestEndpointConntrackPrime(t *testing.T) {
	name, path := newNetns(t, "ctp")
	ipCmd(t, "-n", name, "link", "add", "caliA", "type", "veth", "peer", "name", "caliB")
	ipCmd(t, "-n", name, "link", "set", "caliA", "up")
	ipCmd(t, "-n", name, "link", "set", "caliB", "up")
	ipCmd(t, "-n", name, "route", "add", "10.1.0.5/32", "dev", "caliA", "proto", "80", "scope", "link")
	ipCmd(t, "-n", name, "route", "add", "10.1.0.7/32", "dev", "caliA", "proto", "80", "scope", "link") // now caliB's
	ipCmd(t, "-n", name, "route", "add", "10.1.0.8/32", "dev", "caliB")                                 // not ours
	ipCmd(t, "-n", name, "route", "add", "blackhole", "10.1.0.0/26", "proto", "80")
	kernel, err := WorkloadRoutes(InNetns(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(kernel) != 2 || kernel[addr("10.1.0.5")] != "caliA" || kernel[addr("10.1.0.7")] != "caliA" {
		t.Fatalf("WorkloadRoutes = %v, want 10.1.0.5 and 10.1.0.7 on caliA", kernel)
	}
	ct := NewEndpointConntrack(InNetns(path))
	defer ct.Close()
	if ct.Primed() {
		t.Fatal("primed before the first Prime")
	}
	ct.Prime(map[netip.Addr]string{addr("10.1.0.5"): "caliA", addr("10.1.0.6"): "caliB", addr("10.1.0.7"): "caliB"},
		kernel, []netip.Addr{addr("10.1.0.9")})
	// Records changed since the saved revision: another host's address,
	// and one already owed before the routes, which stays so.
	ct.Owe([]netip.Addr{addr("10.2.0.4"), addr("10.1.0.7")})
	if got, want := ct.Owed(), []netip.Addr{addr("10.1.0.6"), addr("10.1.0.7"), addr("10.1.0.9"), addr("10.2.0.4")}; !slices.Equal(got, want) {
		t.Fatalf("owed %v, want %v", got, want)
	}
	if _, moved, err := ct.FlushMoved(); err != nil || !slices.Equal(moved, []netip.Addr{addr("10.1.0.6"), addr("10.1.0.7")}) {
		t.Fatalf("FlushMoved flushed %v (%v), want the two without their route", moved, err)
	}
	if _, all, err := ct.Flush(); err != nil || len(all) != 4 || len(ct.Owed()) != 0 {
		t.Fatalf("Flush flushed %v (%v), owed after: %v", all, err, ct.Owed())
	}
	// From now on Note compares with what Prime learnt.
	ct.Note(map[netip.Addr]string{addr("10.1.0.5"): "caliA", addr("10.1.0.6"): "caliB", addr("10.1.0.7"): "caliB"})
	if got := ct.Owed(); len(got) != 0 {
		t.Fatalf("owed %v after an unchanged Note", got)
	}
}

// BenchmarkDeleteConntrackOf is what one endpoint removal costs the agent
// (EndpointConntrack.Flush) against conntrack tables of several sizes, with
// the kernel's filtered dumps (what one address gets) and with one whole
// dump matched here (many addresses, or a kernel without filtering).
// cpu-ms/op is the process's user and system CPU (the kernel walks the
// table and fills the dump in our recvmsg calls, so its work is there).
func BenchmarkDeleteConntrackOf(b *testing.B) {
	for _, size := range []int{1_000, 10_000, 50_000} {
		for _, whole := range []bool{false, true} {
			b.Run(fmt.Sprintf("entries=%d/whole=%v", size, whole), func(b *testing.B) {
				_, path := newNetns(b, "ctb")
				h, err := openHandleFamily(path, unix.NETLINK_NETFILTER)
				if err != nil {
					b.Fatal(err)
				}
				defer h.Close()
				for i := range size {
					src := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
					flow := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 600,
						Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IP(src.AsSlice()), DstIP: net.IPv4(10, 1, 0, 7), SrcPort: uint16(1000 + i%50000), DstPort: 53},
						Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: net.IPv4(10, 1, 0, 7), DstIP: net.IP(src.AsSlice()), SrcPort: 53, DstPort: uint16(1000 + i%50000)}}
					if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, flow); err != nil {
						b.Fatalf("entry %d: %v", i, err)
					}
				}
				ct, err := openConntrack(path)
				if err != nil {
					b.Fatal(err)
				}
				defer ct.Close()
				ct.unfiltered = whole
				gone := []netip.Addr{addr("10.1.0.5")} // no entry: finding them is the cost
				var cpu time.Duration
				for b.Loop() {
					c0 := cpuTime()
					if _, err := ct.deleteOf(gone); err != nil {
						b.Fatal(err)
					}
					cpu += cpuTime() - c0
				}
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Whatever a kernel's filter does (this one's IPv6 tuple filter sends the
// entries that do NOT have the address), only entries that name an address
// asked for are deleted: each dumped entry is checked here.
func TestConntrackFilterChecked(t *testing.T) {
	_, path := newNetns(t, "ctf")
	h, err := openHandleFamily(path, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctFlow{"fd00::5", "fd00::99", "fd00::99", "fd00::5"}.create(t, h)
	ctFlow{"fd00::99", "fd00::7", "fd00::7", "fd00::99"}.create(t, h)
	c, err := openConntrack(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := addr("fd00::5")
	if _, err := c.deleteMatching(inSet(map[netip.Addr]bool{a: true}), unix.AF_INET6, &ctFilter{ctField{}, a}); err != nil {
		t.Fatal(err)
	}
	left := ctList(t, h)
	t.Logf("kernel honours the IPv6 filter: %v; left %v", !c.unfiltered, left)
	if !slices.Contains(left, "fd00::99>fd00::7") {
		t.Fatalf("an entry of another address was deleted: left %v", left)
	}
}

// A pass that changes no local address (every resync) costs no netlink:
// the tracker does not even open its socket.
func TestEndpointConntrackIdleIsFree(t *testing.T) {
	ct := NewEndpointConntrack(InNetns("/nonexistent/netns")) // any netlink use would fail
	defer ct.Close()
	local := map[netip.Addr]string{addr("10.1.0.5"): "caliA", addr("fd00::5"): "caliA"}
	for range 3 {
		ct.Note(local)
		if _, _, err := ct.FlushMoved(); err != nil {
			t.Fatal(err)
		}
		if n, addrs, err := ct.Flush(); n != 0 || len(addrs) != 0 || err != nil {
			t.Fatalf("Flush = %d %v %v", n, addrs, err)
		}
	}
	if ct.ct != nil {
		t.Fatal("a socket was opened with nothing to flush")
	}
	// Something owed: now it must try (and here fail, keeping it owed).
	ct.Note(map[netip.Addr]string{addr("fd00::5"): "caliA"})
	if _, _, err := ct.Flush(); err == nil {
		t.Fatal("a flush in a namespace that does not exist succeeded")
	}
	if got := ct.Owed(); !slices.Equal(got, []netip.Addr{addr("10.1.0.5")}) {
		t.Fatalf("after a failed flush owed %v, want 10.1.0.5 still", got)
	}
}

// OweUnheld: the next Flush deletes the entries that name an address the
// predicate accepts (a starting agent's unheld pool addresses), in either
// family and either direction, and only those; then it is done with.
func TestEndpointConntrackUnheld(t *testing.T) {
	_, path := newNetns(t, "ctu")
	h, err := openHandleFamily(path, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctFlow{"10.1.0.5", "10.2.0.9", "10.2.0.9", "10.1.0.5"}.create(t, h) // to an unheld address
	ctFlow{"10.2.0.9", "10.1.0.6", "10.1.0.6", "10.2.0.9"}.create(t, h) // from it
	ctFlow{"10.1.0.5", "10.2.0.8", "10.2.0.8", "10.1.0.5"}.create(t, h) // to a held one
	ctFlow{"fd00::5", "fd00:2::9", "fd00:2::9", "fd00::5"}.create(t, h) // IPv6, unheld
	ctFlow{"fd00::5", "fd00:2::8", "fd00:2::8", "fd00::5"}.create(t, h) // IPv6, held
	ctFlow{"10.1.0.5", "10.2.0.7", "10.2.0.7", "10.1.0.5"}.create(t, h) // held, but owed (Owe)
	ct := NewEndpointConntrack(InNetns(path))
	defer ct.Close()
	unheld := map[netip.Addr]bool{addr("10.2.0.9"): true, addr("fd00:2::9"): true}
	ct.Prime(nil, nil, nil)
	ct.OweUnheld(func(a netip.Addr) bool { return unheld[a] })
	ct.Owe([]netip.Addr{addr("10.2.0.7")})
	if n, _, err := ct.Flush(); err != nil || n != 4 || len(ct.Owed()) != 0 {
		t.Fatalf("Flush deleted %d entries (%v), owed after: %v; want the 3 naming an unheld address and the owed one's", n, err, ct.Owed())
	}
	want := []string{"10.1.0.5>10.2.0.8", "fd00::5>fd00:2::8"}
	if got := ctList(t, h); !slices.Equal(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	ctFlow{"10.1.0.5", "10.2.0.9", "10.2.0.9", "10.1.0.5"}.create(t, h)
	if n, _, err := ct.Flush(); err != nil || n != 0 {
		t.Fatalf("a second Flush deleted %d entries (%v): the unheld addresses are owed only once", n, err)
	}
}

// TestNoteChangeIsNote: random workload changes given to NoteChange (the
// addresses gone and the new or moved ones) leave exactly what Note of the
// whole list leaves: owners, flushes owed (and which of them are moves),
// with records left here and elsewhere and flushes owed in between.
func TestNoteChangeIsNote(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 42))
	addr := func() netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 0, byte(rng.IntN(40))}) }
	dev := func() string { return fmt.Sprintf("cali%d", rng.IntN(6)) }
	whole, delta := NewEndpointConntrack(), NewEndpointConntrack()
	local := map[netip.Addr]string{}
	for range 20 {
		local[addr()] = dev()
	}
	whole.Prime(local, maps.Clone(local), nil)
	delta.Prime(local, maps.Clone(local), nil)
	for i := range 2000 {
		next := maps.Clone(local)
		for range 1 + rng.IntN(3) {
			if a := addr(); rng.IntN(3) == 0 {
				delete(next, a)
			} else {
				next[a] = dev()
			}
		}
		// The change, as the endpoint pass reads it off its routes.
		var gone []netip.Addr
		now := map[netip.Addr]string{}
		for a, d := range local {
			if next[a] != d {
				gone = append(gone, a)
			}
		}
		for a, d := range next {
			if local[a] != d {
				now[a] = d
			}
		}
		// Between passes: records left, flushes owed.
		for _, c := range []*EndpointConntrack{whole, delta} {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			if r.IntN(3) == 0 {
				c.Left(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(40))}), fmt.Sprintf("cali%d", r.IntN(6)))
			}
			if r.IntN(4) == 0 {
				c.LeftElsewhere(netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(40))}))
			}
			if r.IntN(4) == 0 {
				c.Owe([]netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(r.IntN(40))})})
			}
			if r.IntN(5) == 0 {
				clear(c.owed) // flushed
			}
		}
		whole.Note(next)
		delta.NoteChange(gone, now)
		if !maps.Equal(whole.owner, delta.owner) || !maps.Equal(whole.owed, delta.owed) || len(delta.left) != 0 || len(delta.leftElsewhere) != 0 {
			t.Fatalf("step %d (gone %v, now %v):\nNote:       owner %v owed %v\nNoteChange: owner %v owed %v", i, gone, now, whole.owner, whole.owed, delta.owner, delta.owed)
		}
		local = next
	}
}
