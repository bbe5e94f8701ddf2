package netdev

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// hostWithUplink makes a host namespace whose default route leaves through
// an uplink veth to a second namespace. Proxy ARP for 169.254.1.1 answers
// only when the host routes that address through another interface, which
// the default route does.
func hostWithUplink(t *testing.T) (host, hostPath string) {
	host, hostPath = newNetns(t, "h")
	up, _ := newNetns(t, "u")
	vethBetween(t, host, "up0", "10.99.0.1/24 fd99::1/64", up, "up1", "10.99.0.2/24 fd99::2/64")
	ipCmd(t, "-n", host, "route", "add", "default", "via", "10.99.0.2")
	ipCmd(t, "-n", host, "-6", "route", "add", "default", "via", "fd99::2")
	if err := EnableForwarding(InNetns(hostPath)); err != nil {
		t.Fatal(err)
	}
	return host, hostPath
}

func TestWorkloadsReachEachOther(t *testing.T) {
	_, hostPath := hostWithUplink(t)
	_, w1 := newNetns(t, "w1")
	_, w2 := newNetns(t, "w2")
	in := InNetns(hostPath)

	for _, k := range [][]string{{"net", "ipv4", "ip_forward"}, {"net", "ipv6", "conf", "all", "forwarding"}} {
		if v := readSysctlIn(t, hostPath, k...); v != "1" {
			t.Fatalf("%v = %s after EnableForwarding", k, v)
		}
	}

	spec1 := WorkloadSpec{NetnsPath: w1, HostIface: api.IfaceNameForID(t.Name() + "1"),
		Addrs: []netip.Prefix{pfx("192.168.100.1/32"), pfx("fd00::1/128")}}
	spec2 := WorkloadSpec{NetnsPath: w2, HostIface: api.IfaceNameForID(t.Name() + "2"),
		Addrs: []netip.Prefix{pfx("192.168.100.2/32"), pfx("fd00::2/128")}, MTU: 1400}
	mac1, err := AddWorkload(spec1, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := net.ParseMAC(mac1); err != nil || mac1 == HostSideMAC {
		t.Fatalf("AddWorkload returned MAC %q", mac1)
	}
	if _, err := AddWorkload(spec2, in); err != nil {
		t.Fatal(err)
	}

	// The wiring, as the design describes it.
	hh, err := openHandle(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	host1, err := hh.LinkByName(spec1.HostIface)
	if err != nil {
		t.Fatal(err)
	}
	if host1.Attrs().HardwareAddr.String() != HostSideMAC || host1.Attrs().MTU != 1500 || host1.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("host side: mac %s mtu %d flags %v", host1.Attrs().HardwareAddr, host1.Attrs().MTU, host1.Attrs().Flags)
	}
	if a, _ := hh.AddrList(host1, netlink.FAMILY_V4); len(a) != 0 {
		t.Fatalf("host side has IPv4 addresses %v", a)
	}
	// Born with the clsact qdisc the fast path's filter goes on: adding it
	// later, to the interface up and routed, dropped its packets meanwhile.
	if qs, err := hh.QdiscList(host1); err != nil || !slices.ContainsFunc(qs, func(q netlink.Qdisc) bool { return q.Type() == "clsact" }) {
		t.Fatalf("host side qdiscs %v (%v): want a clsact", qs, err)
	}
	for k, want := range map[string]string{
		"net/ipv4/conf/" + spec1.HostIface + "/proxy_arp":    "1",
		"net/ipv4/neigh/" + spec1.HostIface + "/proxy_delay": "0",
		"net/ipv4/conf/" + spec1.HostIface + "/forwarding":   "1",
		"net/ipv6/conf/" + spec1.HostIface + "/accept_ra":    "0",
		"net/ipv6/conf/" + spec1.HostIface + "/forwarding":   "1",
	} {
		if got := readSysctlIn(t, hostPath, strings.Split(k, "/")...); got != want {
			t.Errorf("host %s = %s, want %s", k, got, want)
		}
	}
	if got := readSysctlIn(t, w1, "net", "ipv6", "conf", "eth0", "accept_dad"); got != "0" {
		t.Errorf("workload accept_dad = %s", got)
	}
	wh, err := openHandle(w1)
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Close()
	eth0, err := wh.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if eth0.Attrs().HardwareAddr.String() != mac1 {
		t.Fatalf("workload MAC %s, AddWorkload said %s", eth0.Attrs().HardwareAddr, mac1)
	}
	routes, err := wh.RouteList(eth0, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var sawV4, sawV6 bool
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.IsUnspecified() || r.Dst == nil {
			switch {
			case r.Gw.Equal(net.IP(GatewayIPv4.AsSlice())) && r.Flags&int(netlink.FLAG_ONLINK) != 0:
				sawV4 = true
			case r.Gw.Equal(net.IP(GatewayIPv6.AsSlice())):
				sawV6 = true
			}
		}
	}
	if !sawV4 || !sawV6 {
		t.Fatalf("workload default routes (v4 %v, v6 %v): %v", sawV4, sawV6, routes)
	}
	if got := ipCmd(t, "-n", strings.TrimPrefix(w2, "/var/run/netns/"), "link", "show", "eth0"); !strings.Contains(got, "mtu 1400") {
		t.Fatalf("workload 2 MTU: %s", got)
	}

	// The agent's route sync adds the host routes.
	rs := NewRouteSyncer(in)
	defer rs.Close()
	desired := []calc.Route{
		{Dst: pfx("192.168.100.1/32"), Kind: calc.RouteLocal, Dev: spec1.HostIface},
		{Dst: pfx("fd00::1/128"), Kind: calc.RouteLocal, Dev: spec1.HostIface},
		{Dst: pfx("192.168.100.2/32"), Kind: calc.RouteLocal, Dev: spec2.HostIface},
		{Dst: pfx("fd00::2/128"), Kind: calc.RouteLocal, Dev: spec2.HostIface},
	}
	if err := rs.Apply(desired); err != nil {
		t.Fatal(err)
	}
	if st := rs.Stats(); st.Added != 4 {
		t.Fatalf("stats %+v", st)
	}

	checkTCP(t, w1, w2, addr("192.168.100.2"))
	checkTCP(t, w2, w1, addr("192.168.100.1"))
	checkTCP(t, w1, w2, addr("fd00::2"))
	checkTCP(t, w2, w1, addr("fd00::1"))

	// container ip add / remove.
	extra := pfx("192.168.100.11/32")
	if err := WorkloadAddAddr(spec1, extra, in); err != nil {
		t.Fatal(err)
	}
	if err := WorkloadAddAddr(spec1, extra, in); err != nil {
		t.Fatalf("adding an address twice: %v", err)
	}
	if err := rs.Apply(append(desired, calc.Route{Dst: extra, Kind: calc.RouteLocal, Dev: spec1.HostIface})); err != nil {
		t.Fatal(err)
	}
	checkTCP(t, w2, w1, extra.Addr())
	if err := WorkloadDelAddr(spec1, extra, in); err != nil {
		t.Fatal(err)
	}
	if err := WorkloadDelAddr(spec1, extra, in); err != nil {
		t.Fatalf("removing an absent address: %v", err)
	}
	addrs, err := wh.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || !addrs[0].IP.Equal(net.IP(spec1.Addrs[0].Addr().AsSlice())) {
		t.Fatalf("workload addresses after removal: %v %v", addrs, err)
	}

	// Removal takes both ends; removing again is fine.
	if err := RemoveWorkload(spec1.HostIface, in); err != nil {
		t.Fatal(err)
	}
	if LinkExists(spec1.HostIface, in) || LinkExists("eth0", InNetns(w1)) {
		t.Fatal("veth survived RemoveWorkload")
	}
	if err := RemoveWorkload(spec1.HostIface, in); err != nil {
		t.Fatalf("second RemoveWorkload: %v", err)
	}
	// Its routes went with the device; the syncer says why it cannot
	// restore them and keeps the others.
	err = rs.Apply(desired)
	if err == nil || !strings.Contains(err.Error(), "route 192.168.100.1/32 dev "+spec1.HostIface+": device "+spec1.HostIface+" does not exist") {
		t.Fatalf("Apply after removal: %v", err)
	}
	if st := rs.Stats(); st.Unchanged != 2 || st.Failed != 2 || st.Changes() != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAddWorkloadFailureLeavesNothing(t *testing.T) {
	host, hostPath := hostWithUplink(t)
	_, w := newNetns(t, "w")
	in := InNetns(hostPath)
	name := api.IfaceNameForID(t.Name())
	spec := WorkloadSpec{NetnsPath: w, HostIface: name, Addrs: []netip.Prefix{pfx("192.168.100.1/32"), pfx("fd00::1/128")}}

	assertClean := func(when string) {
		t.Helper()
		if LinkExists(name, in) {
			t.Fatalf("%s: host side %s left behind", when, name)
		}
		if LinkExists("eth0", InNetns(w)) {
			t.Fatalf("%s: eth0 left in the workload", when)
		}
	}

	bad := spec
	bad.NetnsPath = "/var/run/netns/nd" + runID + "-does-not-exist"
	if _, err := AddWorkload(bad, in); err == nil || !strings.Contains(err.Error(), "workload netns") {
		t.Fatalf("nonexistent netns: %v", err)
	}
	assertClean("nonexistent netns")

	bad = spec
	bad.Addrs = []netip.Prefix{pfx("192.168.100.0/24")}
	if _, err := AddWorkload(bad, in); err == nil || !strings.Contains(err.Error(), "Addrs") {
		t.Fatalf("/24 address: %v", err)
	}
	assertClean("invalid address")

	bad = spec
	bad.NetnsPath = hostPath
	if _, err := AddWorkload(bad, in); err == nil || !strings.Contains(err.Error(), "host's own namespace") {
		t.Fatalf("workload netns = host netns: %v", err)
	}
	assertClean("host netns as workload")

	// A failure after the veth exists: the workload refuses IPv6 addresses.
	writeSysctlIn(t, w, "1", "net", "ipv6", "conf", "all", "disable_ipv6")
	writeSysctlIn(t, w, "1", "net", "ipv6", "conf", "default", "disable_ipv6")
	_, err := AddWorkload(spec, in)
	if err == nil || !strings.Contains(err.Error(), "add address fd00::1/128") {
		t.Fatalf("IPv6-disabled workload: %v", err)
	}
	t.Logf("expected failure: %v", err)
	assertClean("address failure")
	writeSysctlIn(t, w, "0", "net", "ipv6", "conf", "all", "disable_ipv6")
	writeSysctlIn(t, w, "0", "net", "ipv6", "conf", "default", "disable_ipv6")

	// Somebody else's interface of our name stays untouched.
	ipCmd(t, "-n", host, "link", "add", name, "type", "veth", "peer", "name", "other0")
	if _, err := AddWorkload(spec, in); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("existing host interface: %v", err)
	}
	if !LinkExists(name, in) || LinkExists("eth0", InNetns(w)) {
		t.Fatal("existing interface removed, or workload side created")
	}
	if err := RemoveWorkload(name, in); err != nil {
		t.Fatal(err)
	}

	// And after all that, the same spec works.
	if _, err := AddWorkload(spec, in); err != nil {
		t.Fatal(err)
	}
}
