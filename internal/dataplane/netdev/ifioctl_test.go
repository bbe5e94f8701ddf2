package netdev

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// TestIoctlLinks: the ioctl lookup the host-side syncer uses reads what
// netlink reads of a link (index, up, MTU, MAC, veth or not), so the
// syncer still tells our veth from anything else under its name: a
// device with our MAC that is not a veth is foreign, as a veth without
// it is, and a name nothing holds is missing.
func TestIoctlLinks(t *testing.T) {
	host, hostPath := newNetns(t, "ioctl")
	ipCmd(t, "-n", host, "link", "add", "caliv0", "mtu", "1400", "address", HostSideMAC, "type", "veth", "peer", "name", "pv0")
	ipCmd(t, "-n", host, "link", "set", "caliv0", "up")
	ipCmd(t, "-n", host, "link", "add", "calib0", "address", HostSideMAC, "type", "bridge")
	links, err := NewIfLookup(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer links.Close()
	h, err := openHandle(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, name := range []string{"caliv0", "pv0", "calib0"} {
		got, err := links.find(name)
		if err != nil || got == nil {
			t.Fatalf("%s: %v, %v", name, got, err)
		}
		want, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		g, w := got.Attrs(), want.Attrs()
		wantType := "device"
		if want.Type() == "veth" {
			wantType = "veth"
		}
		if got.Type() != wantType || g.Index != w.Index || g.MTU != w.MTU || g.Flags&1 != w.Flags&1 || g.HardwareAddr.String() != w.HardwareAddr.String() {
			t.Fatalf("%s: ioctls read %s %+v, netlink %s %+v", name, got.Type(), *g, want.Type(), *w)
		}
	}
	if l, _ := links.find("calib0"); l.Type() == "veth" || l.Attrs().HardwareAddr.String() != HostSideMAC {
		t.Fatal("a bridge with our MAC reads as our veth")
	}
	if l, err := links.find("calinone0"); l != nil || err != nil {
		t.Fatalf("a missing interface: %v, %v", l, err)
	}
	// Through the syncer: the bridge is foreign, the veth ours.
	s := NewWorkloadIfaceSyncer(InNetns(hostPath))
	rep, err := s.Apply([]HostSide{{Name: "caliv0", MTU: 1400}, {Name: "calib0"}, {Name: "calinone0"}})
	if err != nil || len(rep.Foreign) != 1 || rep.Foreign[0] != "calib0" || len(rep.Missing) != 1 || rep.Missing[0] != "calinone0" {
		t.Fatalf("Apply: %+v, %v", rep, err)
	}
}

// TestBulkSysctlReadBack: the read-back of many host sides takes the
// values netlink shows instead of reading each file, so netlink must show
// each setting as /proc does: every one of the seven changed by hand, each
// on another host side, is put back, and a read-back with nothing changed
// puts back nothing.
func TestBulkSysctlReadBack(t *testing.T) {
	host, hostPath := newNetns(t, "bulk")
	var want []HostSide
	for i := range bulkSysctlThreshold + 4 {
		name := fmt.Sprintf("calibulk%02d", i)
		ipCmd(t, "-n", host, "link", "add", name, "address", HostSideMAC, "type", "veth", "peer", "name", fmt.Sprintf("pbulk%02d", i))
		want = append(want, HostSide{Name: name, IPv6: true, Group: 0x40000000 + uint32(i)})
	}
	s := NewWorkloadIfaceSyncer(InNetns(hostPath)) // every Apply reads everything back
	if _, err := s.Apply(want); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Apply(want)
	if err != nil || len(rep.Fixed) != 0 {
		t.Fatalf("a read-back with nothing changed: fixed %q, %v", rep.Fixed, err)
	}
	edits := []string{
		"ipv4/conf/calibulk00/proxy_arp=0",
		"ipv4/neigh/calibulk01/proxy_delay=80",
		"ipv4/conf/calibulk02/forwarding=0",
		"ipv6/conf/calibulk03/disable_ipv6=1",
		"ipv6/conf/calibulk04/addr_gen_mode=1",
		"ipv6/conf/calibulk05/accept_dad=1",
		"ipv6/conf/calibulk06/accept_ra=1",
		"ipv6/conf/calibulk07/forwarding=0",
	}
	for _, e := range edits {
		k, v, _ := strings.Cut(e, "=")
		ipCmd(t, "netns", "exec", host, "sh", "-c", "echo "+v+" > /proc/sys/net/"+k)
	}
	// And a device group.
	ipCmd(t, "-n", host, "link", "set", "calibulk08", "group", "7")
	// Netlink shows every setting of every host side as /proc does (a
	// proxy_delay other than 0 as "?": its units differ).
	var known map[string]string
	if err := runInNetns(hostPath, func() error { known = bulkSysctls(); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, hs := range want {
		for _, st := range hs.sysctls() {
			p := sysctlPath(st.key)
			v, ok := known[p]
			out, err := exec.Command("ip", "netns", "exec", host, "cat", p).Output()
			if err != nil {
				t.Fatal(err)
			}
			file := strings.TrimSpace(string(out))
			if !ok || v != file && !(v == "?" && file != "0") {
				t.Errorf("%s: netlink shows %q (known %v), the file %q", p, v, ok, file)
			}
		}
	}
	rep, err = s.Apply(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range edits {
		k, _, _ := strings.Cut(e, "=")
		needle := strings.ReplaceAll(k, "/", ".") + " "
		if !slices.ContainsFunc(rep.Fixed, func(f string) bool { return strings.HasPrefix(f, needle) }) {
			t.Errorf("%s by hand not put back (no %q in %q)", e, needle, rep.Fixed)
		}
	}
	if !slices.Contains(rep.Fixed, fmt.Sprintf("calibulk08 group 7 -> %d", want[8].Group)) {
		t.Errorf("a group set by hand not put back: %q", rep.Fixed)
	}
	if len(rep.Fixed) != len(edits)+1 {
		t.Fatalf("put back %q, want only the %d edits", rep.Fixed, len(edits)+1)
	}
}

// TestHostSideGroup: a host side gets the device group it wants (the
// policy dispatches by it) without that counting as a repair, and a group
// changed by hand is put back and reported: the chains of another profile
// list would decide its traffic.
func TestHostSideGroup(t *testing.T) {
	host, hostPath := newNetns(t, "grp")
	ipCmd(t, "-n", host, "link", "add", "caligrp0", "address", HostSideMAC, "type", "veth", "peer", "name", "pgrp0")
	group := func() string {
		out := ipCmd(t, "-n", host, "-d", "link", "show", "caligrp0")
		f := strings.Fields(out[strings.Index(out, " group ")+1:])
		return f[1]
	}
	want := []HostSide{{Name: "caligrp0", Group: 0x40000001}}
	s := NewWorkloadIfaceSyncer(InNetns(hostPath))
	rep, err := s.Apply(want)
	if err != nil || slices.ContainsFunc(rep.Fixed, func(f string) bool { return strings.Contains(f, "group") }) {
		t.Fatalf("first Apply: %+v, %v (a fresh veth's group is no repair)", rep, err)
	}
	if g := group(); g != "1073741825" {
		t.Fatalf("group %s after Apply, want 1073741825", g)
	}
	ipCmd(t, "-n", host, "link", "set", "caligrp0", "group", "1073741826")
	rep, err = s.Apply(want)
	if err != nil || !slices.Equal(rep.Fixed, []string{"caligrp0 group 1073741826 -> 1073741825"}) {
		t.Fatalf("after a change by hand: %+v, %v", rep, err)
	}
	if g := group(); g != "1073741825" {
		t.Fatalf("group %s after the read-back, want 1073741825", g)
	}
}

// TestHostSideGroupRecreated: a veth is born with its group (the entry
// points make it so), and a host side made again under a name the
// incremental syncer checked before it went gets its group at once, not
// at the next read-back of groups: the policy drops an endpoint's
// interface without it.
func TestHostSideGroupRecreated(t *testing.T) {
	host, hostPath := newNetns(t, "grpre")
	group := func(name string) string {
		out := ipCmd(t, "-n", host, "-d", "link", "show", name)
		return strings.Fields(out[strings.Index(out, " group ")+1:])[1]
	}
	if _, err := AddEngineVeth(EngineVethSpec{HostIface: "caligrp9", PeerIface: "pgrp9", Group: 0x40000009}, InNetns(hostPath)); err != nil {
		t.Fatal(err)
	}
	if g := group("caligrp9"); g != "1073741833" {
		t.Fatalf("a new veth's group %s, want 1073741833", g)
	}

	s := NewWorkloadIfaceSyncer(InNetns(hostPath))
	s.RecheckEvery = time.Hour // no read-back during the test
	want := []HostSide{{Name: "caligrp1", Group: 0x40000001}}
	ipCmd(t, "-n", host, "link", "add", "caligrp1", "address", HostSideMAC, "type", "veth", "peer", "name", "pgrp1")
	if _, err := s.Apply(want); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyChanged(want); err != nil { // the first Apply's sysctls, now
		t.Fatal(err)
	}
	if g := group("caligrp1"); g != "1073741825" {
		t.Fatalf("group %s, want 1073741825", g)
	}
	// The workload goes (its veth with it) and comes back, made by
	// something that did not set the group.
	if _, err := s.ApplyChanged(nil); err != nil {
		t.Fatal(err)
	}
	ipCmd(t, "-n", host, "link", "del", "caligrp1")
	ipCmd(t, "-n", host, "link", "add", "caligrp1", "address", HostSideMAC, "type", "veth", "peer", "name", "pgrp1")
	if _, err := s.ApplyChanged(want); err != nil {
		t.Fatal(err)
	}
	if g := group("caligrp1"); g != "1073741825" {
		t.Fatalf("the veth made again has group %s, want 1073741825", g)
	}
}

// TestSysfsGroup: a host side's group is read from /sys when /sys shows
// the caller's own namespace (run here under `ip netns exec`, as the lab
// and a host run the agent), and not from a /sys of another namespace.
func TestSysfsGroup(t *testing.T) {
	if os.Getenv("NETDEV_SYSFS_GROUP_CHILD") == "1" {
		l, err := netlink.LinkByName("caligrps")
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := sysfsGroup("", l); !ok || g != 0x40000005 {
			t.Fatalf("sysfsGroup in its own namespace: %#x, %v; want 0x40000005", g, ok)
		}
		return
	}
	host, hostPath := newNetns(t, "sysfs")
	ipCmd(t, "-n", host, "link", "add", "caligrps", "type", "veth", "peer", "name", "pgrps")
	ipCmd(t, "-n", host, "link", "set", "caligrps", "group", "1073741829")
	cmd := exec.Command("ip", "netns", "exec", host, os.Args[0], "-test.run", "^TestSysfsGroup$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "NETDEV_SYSFS_GROUP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSysfsGroup") {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	var index int
	if err := runInNetns(hostPath, func() error {
		l, err := netlink.LinkByName("caligrps")
		if err == nil {
			index = l.Attrs().Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// This test's /sys is not that namespace's: no answer from it.
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "caligrps", Index: index}}
	if g, ok := sysfsGroup("", l); ok {
		t.Errorf("sysfsGroup from another namespace's /sys: %#x", g)
	}
	if _, ok := sysfsGroup(hostPath, l); ok {
		t.Error("sysfsGroup for a namespace given by path answered")
	}
}
