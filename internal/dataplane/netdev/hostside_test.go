package netdev

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// A host side changed by hand (MTU, down, proxy ARP off, forwarding off,
// router advertisements on) is put back by the next Apply, and traffic that
// the change broke flows again; an Apply with nothing to do changes nothing.
// Missing and foreign interfaces are reported and left alone.
func TestWorkloadIfaceSyncerRestoresHandEdits(t *testing.T) {
	host, hostPath := hostWithUplink(t)
	_, w1 := newNetns(t, "w1")
	_, w2 := newNetns(t, "w2")
	in := InNetns(hostPath)
	spec1 := WorkloadSpec{NetnsPath: w1, HostIface: api.IfaceNameForID(t.Name() + "1"), Addrs: []netip.Prefix{pfx("192.168.100.1/32"), pfx("fd00::1/128")}, MTU: 1450}
	spec2 := WorkloadSpec{NetnsPath: w2, HostIface: api.IfaceNameForID(t.Name() + "2"), Addrs: []netip.Prefix{pfx("192.168.100.2/32")}, MTU: 1450}
	for _, s := range []WorkloadSpec{spec1, spec2} {
		if _, err := AddWorkload(s, in); err != nil {
			t.Fatal(err)
		}
	}
	rs := NewRouteSyncer(in)
	defer rs.Close()
	routes := []calc.Route{
		{Dst: pfx("192.168.100.1/32"), Kind: calc.RouteLocal, Dev: spec1.HostIface},
		{Dst: pfx("192.168.100.2/32"), Kind: calc.RouteLocal, Dev: spec2.HostIface},
	}
	if err := rs.Apply(routes); err != nil {
		t.Fatal(err)
	}
	checkTCP(t, w1, w2, addr("192.168.100.2"))

	missing := api.IfaceNameForID(t.Name() + "gone")
	foreign := api.IfaceNameForID(t.Name() + "foreign")
	ipCmd(t, "-n", host, "link", "add", foreign, "type", "veth", "peer", "name", "fpeer0") // a veth, but not with our MAC
	want := []HostSide{
		{Name: spec1.HostIface, MTU: 1450, IPv6: true},
		{Name: spec2.HostIface, MTU: 1450},
		{Name: missing},
		{Name: foreign, MTU: 1400},
	}
	ws := NewWorkloadIfaceSyncer(in)
	rep, err := ws.Apply(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Fixed) != 0 || !slices.Equal(rep.Missing, []string{missing}) || !slices.Equal(rep.Foreign, []string{foreign}) {
		t.Fatalf("first Apply over freshly made veths: %+v", rep)
	}

	// By hand: everything a host side is made with, undone on workload 2.
	ipCmd(t, "-n", host, "link", "set", spec2.HostIface, "mtu", "1300")
	ipCmd(t, "-n", host, "link", "set", spec2.HostIface, "down")
	for k, v := range map[string]string{"ipv4/conf/%s/proxy_arp": "0", "ipv4/conf/%s/forwarding": "0", "ipv4/neigh/%s/proxy_delay": "80", "ipv6/conf/%s/accept_ra": "1"} {
		writeSysctlIn(t, hostPath, v, strings.Split("net/"+strings.Replace(k, "%s", spec2.HostIface, 1), "/")...)
	}
	ipCmd(t, "-n", strings.TrimPrefix(w2, "/var/run/netns/"), "neigh", "flush", "all")
	if err := tcpRoundTrip(w1, w2, addr("192.168.100.2"), time.Second); err == nil {
		t.Fatal("TCP to workload 2 works with its host side down and proxy ARP off: the test proves nothing")
	}

	rep, err = ws.Apply(want)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Fixed) != 6 {
		t.Fatalf("Apply after the hand edits fixed %d things, want 6: %q", len(rep.Fixed), rep.Fixed)
	}
	if err := rs.Apply(routes); err != nil { // the link going down took its route; the agent's pass re-adds it
		t.Fatal(err)
	}
	hh, err := openHandle(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	l, err := hh.LinkByName(spec2.HostIface)
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MTU != 1450 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("host side after Apply: mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	for k, v := range map[string]string{"ipv4/conf/%s/proxy_arp": "1", "ipv4/conf/%s/forwarding": "1", "ipv4/neigh/%s/proxy_delay": "0", "ipv6/conf/%s/accept_ra": "0"} {
		if got := readSysctlIn(t, hostPath, strings.Split("net/"+strings.Replace(k, "%s", spec2.HostIface, 1), "/")...); got != v {
			t.Errorf("%s = %s after Apply, want %s", k, got, v)
		}
	}
	checkTCP(t, w1, w2, addr("192.168.100.2"))
	if l, err := hh.LinkByName(foreign); err != nil || l.Attrs().MTU == 1400 {
		t.Fatalf("the foreign veth was touched: %v %v", l, err)
	}

	rep, err = ws.Apply(want)
	if err != nil || len(rep.Fixed) != 0 {
		t.Fatalf("a second Apply changed %q (err %v)", rep.Fixed, err)
	}
}

// With RecheckEvery, an Apply looks at the host sides it has not checked
// (new, or wanted differently) and converges them in full, and leaves the
// checked ones, hand edits included, to the full read-back it says is due
// (a pass per new workload must not cost a scan of all the others). The
// first Apply converges every host side's MTU and link state at once and
// leaves their sysctls, set when the veth was made, to that read-back.
// When due, every hand edit is put back.
func TestWorkloadIfaceSyncerRecheck(t *testing.T) {
	host, hostPath := hostWithUplink(t)
	_, w1 := newNetns(t, "w1")
	_, w2 := newNetns(t, "w2")
	in := InNetns(hostPath)
	spec1 := WorkloadSpec{NetnsPath: w1, HostIface: api.IfaceNameForID(t.Name() + "1"), Addrs: []netip.Prefix{pfx("192.168.101.1/32")}}
	spec2 := WorkloadSpec{NetnsPath: w2, HostIface: api.IfaceNameForID(t.Name() + "2"), Addrs: []netip.Prefix{pfx("192.168.101.2/32")}}
	if _, err := AddWorkload(spec1, in); err != nil {
		t.Fatal(err)
	}
	proxyARP := func(iface string) []string { return strings.Split("net/ipv4/conf/"+iface+"/proxy_arp", "/") }
	ws := NewWorkloadIfaceSyncer(in)
	ws.RecheckEvery = time.Hour
	hs1 := HostSide{Name: spec1.HostIface}
	// Broken while no agent ran: the first Apply puts the MTU back at
	// once, the sysctl on the read-back.
	ipCmd(t, "-n", host, "link", "set", spec1.HostIface, "mtu", "1300")
	writeSysctlIn(t, hostPath, "0", proxyARP(spec1.HostIface)...)
	rep, err := ws.Apply([]HostSide{hs1})
	if err != nil || rep.Recheck <= 0 || rep.Recheck > time.Hour {
		t.Fatalf("first Apply: %+v %v, want a Recheck within the hour", rep, err)
	}
	if !slices.Contains(rep.Fixed, spec1.HostIface+" mtu 1300 -> 1500") {
		t.Errorf("the first Apply did not converge the MTU: %q", rep.Fixed)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec1.HostIface)...); got != "0" {
		t.Errorf("the first Apply read sysctls back before due (proxy_arp %s)", got)
	}
	ipCmd(t, "-n", host, "link", "set", spec1.HostIface, "mtu", "1300")
	// A new workload: it is converged (its sysctl was lost), workload 1
	// is not looked at.
	if _, err := AddWorkload(spec2, in); err != nil {
		t.Fatal(err)
	}
	hs2 := HostSide{Name: spec2.HostIface}
	writeSysctlIn(t, hostPath, "0", proxyARP(spec2.HostIface)...) // as if AddWorkload had failed to set it
	rep, err = ws.Apply([]HostSide{hs1, hs2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Recheck <= 0 || rep.Recheck > time.Hour {
		t.Errorf("Recheck %v, want the rest of the hour", rep.Recheck)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec2.HostIface)...); got != "1" {
		t.Errorf("the new host side's proxy_arp = %s, want 1", got)
	}
	if len(rep.Fixed) != 1 {
		t.Errorf("Fixed %q, want only the new host side's proxy_arp", rep.Fixed)
	}
	// Removed (a pass without it) and made again: new, converged at once.
	if err := RemoveWorkload(spec1.HostIface, in); err != nil {
		t.Fatal(err)
	}
	if rep, err := ws.Apply([]HostSide{hs2}); err != nil || len(rep.Fixed)+len(rep.Missing) != 0 {
		t.Fatalf("Apply without workload 1: %+v %v", rep, err)
	}
	if _, err := AddWorkload(spec1, in); err != nil {
		t.Fatal(err)
	}
	writeSysctlIn(t, hostPath, "0", proxyARP(spec1.HostIface)...)
	if _, err := ws.Apply([]HostSide{hs1, hs2}); err != nil {
		t.Fatal(err)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec1.HostIface)...); got != "1" {
		t.Errorf("a re-created host side's proxy_arp = %s after Apply, want 1", got)
	}
	// Due: every host side is read back, hand edits of checked ones
	// included.
	writeSysctlIn(t, hostPath, "0", proxyARP(spec2.HostIface)...)
	ipCmd(t, "-n", host, "link", "set", spec1.HostIface, "mtu", "1300")
	ws.due = time.Now() // as if the hour had passed
	rep, err = ws.Apply([]HostSide{hs1, hs2})
	if err != nil || rep.Recheck != 0 {
		t.Fatalf("due Apply: %+v %v", rep, err)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec2.HostIface)...); got != "1" {
		t.Errorf("a hand edit survived a due read-back: proxy_arp = %s", got)
	}
	if !slices.Contains(rep.Fixed, spec1.HostIface+" mtu 1300 -> 1500") {
		t.Errorf("the due read-back did not converge the MTU: %q", rep.Fixed)
	}
}

// ApplyChanged converges a new host side in full, leaves the checked
// ones alone and, unlike Apply, makes no read-back of them due: a hand
// edit of one survives it (the next whole pass's read-back puts it back).
// A read-back already due stays due.
func TestWorkloadIfaceSyncerApplyChanged(t *testing.T) {
	_, hostPath := hostWithUplink(t)
	_, w1 := newNetns(t, "w1")
	_, w2 := newNetns(t, "w2")
	in := InNetns(hostPath)
	spec1 := WorkloadSpec{NetnsPath: w1, HostIface: api.IfaceNameForID(t.Name() + "1"), Addrs: []netip.Prefix{pfx("192.168.102.1/32")}}
	spec2 := WorkloadSpec{NetnsPath: w2, HostIface: api.IfaceNameForID(t.Name() + "2"), Addrs: []netip.Prefix{pfx("192.168.102.2/32")}}
	if _, err := AddWorkload(spec1, in); err != nil {
		t.Fatal(err)
	}
	proxyARP := func(iface string) []string { return strings.Split("net/ipv4/conf/"+iface+"/proxy_arp", "/") }
	ws := NewWorkloadIfaceSyncer(in)
	ws.RecheckEvery = time.Hour
	hs1, hs2 := HostSide{Name: spec1.HostIface}, HostSide{Name: spec2.HostIface}
	if _, err := ws.Apply([]HostSide{hs1}); err != nil {
		t.Fatal(err)
	}
	ws.due = time.Now()
	if rep, err := ws.Apply([]HostSide{hs1}); err != nil || rep.Recheck != 0 {
		t.Fatalf("the read-back: %+v %v", rep, err)
	}
	// Nothing due now. A hand edit of workload 1, then workload 2 starts.
	writeSysctlIn(t, hostPath, "0", proxyARP(spec1.HostIface)...)
	if _, err := AddWorkload(spec2, in); err != nil {
		t.Fatal(err)
	}
	writeSysctlIn(t, hostPath, "0", proxyARP(spec2.HostIface)...) // as if AddWorkload had failed to set it
	rep, err := ws.ApplyChanged([]HostSide{hs1, hs2})
	if err != nil || rep.Recheck != 0 || !ws.due.IsZero() {
		t.Fatalf("ApplyChanged: %+v %v (due %v), want no read-back due", rep, err, ws.due)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec2.HostIface)...); got != "1" {
		t.Errorf("the new host side's proxy_arp = %s, want 1", got)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec1.HostIface)...); got != "0" {
		t.Errorf("ApplyChanged read back a checked host side (proxy_arp %s)", got)
	}
	// A whole pass makes the read-back due; ApplyChanged keeps it due.
	if rep, err := ws.Apply([]HostSide{hs1, hs2}); err != nil || rep.Recheck <= 0 {
		t.Fatalf("Apply: %+v %v, want a read-back due", rep, err)
	}
	if rep, err := ws.ApplyChanged([]HostSide{hs1, hs2}); err != nil || rep.Recheck <= 0 {
		t.Fatalf("ApplyChanged with a read-back pending: %+v %v, want it still due", rep, err)
	}
	ws.due = time.Now()
	if _, err := ws.ApplyChanged([]HostSide{hs1, hs2}); err != nil {
		t.Fatal(err)
	}
	if got := readSysctlIn(t, hostPath, proxyARP(spec1.HostIface)...); got != "1" {
		t.Errorf("a hand edit survived the due read-back: proxy_arp = %s", got)
	}
}
