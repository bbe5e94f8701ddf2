package netdev

import (
	"testing"
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
	links, err := newIoctlLinks(hostPath)
	if err != nil {
		t.Fatal(err)
	}
	defer links.close()
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
