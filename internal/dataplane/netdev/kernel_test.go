package netdev

import (
	"strings"
	"testing"
)

func TestHaveLinkType(t *testing.T) {
	for _, kind := range []string{"veth", "vxlan", "bridge", "macvlan"} {
		if err := ProbeLinkType(kind); err != nil {
			t.Errorf("%s: %v", kind, err)
		}
	}
	if HaveLinkType("nosuchlinktype") {
		t.Error("nosuchlinktype reported present")
	}
	// This kernel has no IPIP (MACHINE-NOTES); wherever it is absent the
	// error must say so plainly.
	if err := ProbeLinkType("ipip"); err != nil && !strings.Contains(err.Error(), "this kernel has no ipip support") {
		t.Errorf("ipip: %v", err)
	} else {
		t.Logf("ipip: %v", err)
	}
	// Cached: the same answer, no second probe.
	if HaveLinkType("ipip") != (ProbeLinkType("ipip") == nil) {
		t.Error("cached answer differs")
	}
}

func TestHostIPPrefix(t *testing.T) {
	_, hostPath := routeHost(t)
	p, iface, err := HostIPPrefix(addr("10.99.0.1"), InNetns(hostPath))
	if err != nil || p != pfx("10.99.0.1/24") || iface != "up0" {
		t.Fatalf("HostIPPrefix(10.99.0.1) = %s %s %v", p, iface, err)
	}
	p, iface, err = HostIPPrefix(addr("fd99::1"), InNetns(hostPath))
	if err != nil || p != pfx("fd99::1/64") || iface != "up0" {
		t.Fatalf("HostIPPrefix(fd99::1) = %s %s %v", p, iface, err)
	}
	_, _, err = HostIPPrefix(addr("10.99.0.2"), InNetns(hostPath))
	if err == nil || !strings.Contains(err.Error(), "10.99.0.2 is not assigned to any interface") {
		t.Fatalf("address of another host: %v", err)
	}
}

func TestEnableForwarding(t *testing.T) {
	_, path := newNetns(t, "f")
	if v := readSysctlIn(t, path, "net", "ipv4", "ip_forward"); v != "0" {
		t.Logf("new namespace starts with ip_forward=%s", v)
	}
	if err := EnableForwarding(InNetns(path)); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]string{{"net", "ipv4", "ip_forward"}, {"net", "ipv6", "conf", "all", "forwarding"}} {
		if v := readSysctlIn(t, path, k...); v != "1" {
			t.Errorf("%v = %s", k, v)
		}
	}
}

// TestSysctlsWriteOnlyWhatDiffers: a new host side in a namespace with
// forwarding on already forwards, so its forwarding settings (whose write
// takes the kernel's RTNL lock) are read, not written; the others are
// written and take effect. A missing file is an error unless optional.
func TestSysctlsWriteOnlyWhatDiffers(t *testing.T) {
	host, hostPath := newNetns(t, "h")
	if err := EnableForwarding(InNetns(hostPath)); err != nil {
		t.Fatal(err)
	}
	ipCmd(t, "-n", host, "link", "add", "sux0", "type", "veth", "peer", "name", "sux1")
	fixed, err := setSysctls(hostPath, hostSideSysctls("sux0", false), false, false)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(fixed, "; ")
	if strings.Contains(got, "forwarding") || strings.Contains(got, "addr_gen_mode") || !strings.Contains(got, "proxy_arp 0 -> 1") {
		t.Errorf("written: %s; want proxy_arp and not forwarding or addr_gen_mode (already right)", got)
	}
	for _, k := range hostSideSysctls("sux0", false) {
		if v := readSysctlIn(t, hostPath, k.key...); v != k.value {
			t.Errorf("%v = %s, want %s", k.key, v, k.value)
		}
	}
	if fixed, err := setSysctls(hostPath, hostSideSysctls("sux0", false), false, false); err != nil || len(fixed) != 0 {
		t.Errorf("second run wrote %q (err %v), want nothing", fixed, err)
	}
	missing := []sysctl{{key: []string{"net", "ipv4", "conf", "sux9", "proxy_arp"}, value: "1"}}
	if err := writeSysctls(hostPath, missing); err == nil {
		t.Error("a missing interface's setting was not an error")
	}
	missing[0].optional = true
	if err := writeSysctls(hostPath, missing); err != nil {
		t.Errorf("a missing optional setting: %v", err)
	}
}
