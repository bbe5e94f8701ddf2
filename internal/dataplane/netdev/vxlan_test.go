package netdev

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

func TestVTEPMAC(t *testing.T) {
	if got := api.VTEPMAC(addr("10.0.2.15")); got != "66:cb:0a:00:02:0f" {
		t.Fatalf("api.VTEPMAC(10.0.2.15) = %s", got)
	}
	if api.VTEPMAC(addr("::ffff:10.0.2.15")) != api.VTEPMAC(addr("10.0.2.15")) {
		t.Fatal("mapped address gives another MAC")
	}
	m, _ := net.ParseMAC(api.VTEPMAC(addr("fd00::1")))
	if m[0] != 0x66 || m[1] != 0xcb || api.VTEPMAC(addr("fd00::1")) == api.VTEPMAC(addr("fd00::2")) {
		t.Fatalf("IPv6 VTEP MAC %s", m)
	}
}

type vxHost struct {
	name, path string
	ip         netip.Addr
	wl         string // workload netns path
	iface      string
	wlAddr     netip.Prefix
	block      netip.Prefix
	vx         *VXLANSyncer
	rs         *RouteSyncer
}

func (h *vxHost) config(peers ...*vxHost) calc.VXLAN {
	v := calc.VXLAN{Enabled: true, Device: "vxlan.calico", VNI: 4096, LocalIP: h.ip, MAC: api.VTEPMAC(h.ip), MTU: 1450}
	for _, p := range peers {
		v.Peers = append(v.Peers, calc.VTEP{HostIP: p.ip, MAC: api.VTEPMAC(p.ip)})
	}
	return v
}

func (h *vxHost) routes(peers ...*vxHost) []calc.Route {
	r := []calc.Route{{Dst: h.wlAddr, Kind: calc.RouteLocal, Dev: h.iface}}
	for _, p := range peers {
		r = append(r, calc.Route{Dst: p.block, Kind: calc.RouteVia, Gateway: p.ip, Dev: "vxlan.calico", OnLink: true})
	}
	return r
}

func TestVXLANWorkloadsReachAcrossHosts(t *testing.T) {
	a := &vxHost{ip: addr("10.98.0.1"), wlAddr: pfx("192.168.10.1/32"), block: pfx("192.168.10.0/26")}
	b := &vxHost{ip: addr("10.98.0.2"), wlAddr: pfx("192.168.20.1/32"), block: pfx("192.168.20.0/26")}
	a.name, a.path = newNetns(t, "ha")
	b.name, b.path = newNetns(t, "hb")
	// One L2 segment between the hosts. Each host's default route points at
	// the other, which also gives proxy ARP its route for 169.254.1.1.
	vethBetween(t, a.name, "fab0", "10.98.0.1/24", b.name, "fab0", "10.98.0.2/24")
	ipCmd(t, "-n", a.name, "route", "add", "default", "via", "10.98.0.2")
	ipCmd(t, "-n", b.name, "route", "add", "default", "via", "10.98.0.1")

	for i, h := range []*vxHost{a, b} {
		if err := EnableForwarding(InNetns(h.path)); err != nil {
			t.Fatal(err)
		}
		_, h.wl = newNetns(t, []string{"wa", "wb"}[i])
		h.iface = api.IfaceNameForID(t.Name() + h.wlAddr.String())
		if _, err := AddWorkload(WorkloadSpec{NetnsPath: h.wl, HostIface: h.iface, Addrs: []netip.Prefix{h.wlAddr}, MTU: 1450}, InNetns(h.path)); err != nil {
			t.Fatal(err)
		}
		h.vx = NewVXLANSyncer(InNetns(h.path))
		t.Cleanup(h.vx.Close)
		h.rs = NewRouteSyncer(InNetns(h.path))
		t.Cleanup(h.rs.Close)
	}
	apply := func(h *vxHost, peers ...*vxHost) {
		t.Helper()
		if err := h.vx.Apply(h.config(peers...)); err != nil {
			t.Fatal(err)
		}
		if err := h.rs.Apply(h.routes(peers...)); err != nil {
			t.Fatal(err)
		}
	}
	apply(a, b)
	apply(b, a)

	// The device as configured.
	hh, err := openHandle(a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()
	link, err := hh.LinkByName("vxlan.calico")
	if err != nil {
		t.Fatal(err)
	}
	vx := link.(*netlink.Vxlan)
	if vx.VxlanId != 4096 || !vx.SrcAddr.Equal(net.ParseIP("10.98.0.1")) || vx.Port != 4789 || vx.Learning ||
		vx.MTU != 1450 || vx.HardwareAddr.String() != api.VTEPMAC(a.ip) || vx.Flags&net.FlagUp == 0 {
		t.Fatalf("device: %+v", vx)
	}
	if got := ipCmd(t, "-n", a.name, "neigh", "show", "dev", "vxlan.calico"); !strings.Contains(got, "10.98.0.2 lladdr "+api.VTEPMAC(b.ip)+" PERMANENT") {
		t.Fatalf("neighbours: %s", got)
	}
	if got := cmd(t, "bridge", "-n", a.name, "fdb", "show", "dev", "vxlan.calico"); !strings.Contains(got, api.VTEPMAC(b.ip)+" dst 10.98.0.2 self permanent") {
		t.Fatalf("fdb: %s", got)
	}

	checkTCP(t, a.wl, b.wl, b.wlAddr.Addr())
	checkTCP(t, b.wl, a.wl, a.wlAddr.Addr())
	// The traffic really went through the tunnel.
	link, _ = hh.LinkByName("vxlan.calico")
	if s := link.Attrs().Statistics; s == nil || s.TxPackets == 0 || s.RxPackets == 0 {
		t.Fatalf("tunnel counters: %+v", s)
	}

	// Steady state: nothing to do.
	if err := a.vx.Apply(a.config(b)); err != nil || a.vx.Stats().Changes() != 0 {
		t.Fatalf("second Apply: %v %+v", err, a.vx.Stats())
	}

	// Stale entries (a host that left) are removed, a wrong destination is
	// corrected; learned neighbours are the kernel's and stay.
	ipCmd(t, "-n", a.name, "neigh", "add", "10.98.0.9", "lladdr", "66:cb:0a:62:00:09", "dev", "vxlan.calico", "nud", "permanent")
	ipCmd(t, "-n", a.name, "neigh", "add", "10.98.0.10", "lladdr", "66:cb:0a:62:00:0a", "dev", "vxlan.calico", "nud", "stale")
	cmd(t, "bridge", "-n", a.name, "fdb", "append", "66:cb:0a:62:00:09", "dev", "vxlan.calico", "dst", "10.98.0.9")
	// (A unicast MAC holds one destination; append would be a no-op.)
	cmd(t, "bridge", "-n", a.name, "fdb", "replace", api.VTEPMAC(b.ip), "dev", "vxlan.calico", "dst", "10.98.0.99")
	if err := a.vx.Apply(a.config(b)); err != nil {
		t.Fatal(err)
	}
	if st := a.vx.Stats(); st.NeighDeleted != 1 || st.FDBDeleted != 2 || st.NeighAdded != 0 || st.FDBAdded != 1 || st.LinkChanges != 0 {
		t.Fatalf("stale cleanup: %+v\n%s\n%s", st, ipCmd(t, "-n", a.name, "neigh", "show", "dev", "vxlan.calico"), cmd(t, "bridge", "-n", a.name, "fdb", "show", "dev", "vxlan.calico"))
	}
	neigh := ipCmd(t, "-n", a.name, "neigh", "show", "dev", "vxlan.calico")
	fdb := cmd(t, "bridge", "-n", a.name, "fdb", "show", "dev", "vxlan.calico")
	if strings.Contains(neigh, "10.98.0.9 ") || !strings.Contains(neigh, "10.98.0.10 ") || strings.Contains(fdb, "10.98.0.9") ||
		!strings.Contains(fdb, api.VTEPMAC(b.ip)+" dst 10.98.0.2 self permanent") {
		t.Fatalf("after cleanup:\n%s\n%s", neigh, fdb)
	}

	// A peer's MAC changes and the MTU changes: corrected in place.
	cfg := a.config(b)
	cfg.Peers[0].MAC = "66:cb:00:00:00:01"
	cfg.MTU = 1400
	if err := a.vx.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if st := a.vx.Stats(); st.NeighAdded != 1 || st.FDBAdded != 1 || st.FDBDeleted != 1 || st.LinkChanges != 1 {
		t.Fatalf("peer MAC change: %+v", st)
	}

	// A bad peer is reported and the good ones kept.
	cfg = a.config(b)
	cfg.Peers = append(cfg.Peers, calc.VTEP{HostIP: addr("10.98.0.3"), MAC: "zz"}, calc.VTEP{HostIP: a.ip, MAC: api.VTEPMAC(a.ip)})
	err = a.vx.Apply(cfg)
	if err == nil || !strings.Contains(err.Error(), "peer 10.98.0.3 (zz)") || !strings.Contains(err.Error(), "peer is this host") {
		t.Fatalf("bad peers: %v", err)
	}
	checkTCP(t, a.wl, b.wl, b.wlAddr.Addr())

	// A new VNI needs a new device.
	cfg = a.config(b)
	cfg.VNI = 4097
	if err := a.vx.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if st := a.vx.Stats(); st.LinkChanges != 2 || st.NeighAdded != 1 || st.FDBAdded != 1 {
		t.Fatalf("VNI change: %+v", st)
	}

	// Disabled: the device goes; disabling again is a no-op.
	for range 2 {
		if err := a.vx.Apply(calc.VXLAN{Device: "vxlan.calico"}); err != nil {
			t.Fatal(err)
		}
	}
	if LinkExists("vxlan.calico", InNetns(a.path)) {
		t.Fatal("device survived disabling")
	}
	// Somebody else's interface of that name is not ours to delete.
	ipCmd(t, "-n", a.name, "link", "add", "vxlan.calico", "type", "veth", "peer", "name", "vxp")
	if err := a.vx.Apply(calc.VXLAN{Device: "vxlan.calico"}); err == nil || !LinkExists("vxlan.calico", InNetns(a.path)) {
		t.Fatalf("deleted a veth named like the tunnel: %v", err)
	}
	if err := a.vx.Apply(a.config(b)); err == nil || !strings.Contains(err.Error(), "not a vxlan device") {
		t.Fatalf("took over a veth named like the tunnel: %v", err)
	}
}
