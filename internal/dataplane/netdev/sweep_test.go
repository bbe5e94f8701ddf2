package netdev

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// The sweeper's view of a namespace: only veths we make (derived name,
// HostSideMAC) are listed, and a delete by index spares a veth re-made
// under the same name since it was listed.
func TestWorkloadVethsAndDelete(t *testing.T) {
	host, hostPath := newNetns(t, "h")
	_, w := newNetns(t, "w")
	in := InNetns(hostPath)
	ours := api.WorkloadIfaceName("host", t.Name())
	spec := WorkloadSpec{NetnsPath: w, HostIface: ours, Addrs: []netip.Prefix{pfx("192.168.100.1/32")}}
	if _, err := AddWorkload(spec, in); err != nil {
		t.Fatal(err)
	}
	// Not ours: a cali* veth of another shape, and one of our shape with
	// another MAC.
	ipCmd(t, "-n", host, "link", "add", "calinotours", "type", "veth", "peer", "name", "calinotours-p")
	other := api.WorkloadIfaceName("host", "other")
	ipCmd(t, "-n", host, "link", "add", other, "type", "veth", "peer", "name", "other-p")
	// Nor a device of our name's shape and our MAC that is not a veth
	// (the list is read from /proc/net/dev, the kind by ioctl).
	ipCmd(t, "-n", host, "link", "add", api.WorkloadIfaceName("host", "bridge"), "address", HostSideMAC, "type", "bridge")

	vs, err := WorkloadVeths(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Name != ours {
		t.Fatalf("WorkloadVeths = %+v, want only %s", vs, ours)
	}
	listed := vs[0]
	// The sweeper's skip set (the interfaces of endpoints it knows): left
	// out, while a leftover of ours outside it is still listed.
	left := api.WorkloadIfaceName("host", "leftover")
	_, w2 := newNetns(t, "w2")
	leftSpec := WorkloadSpec{NetnsPath: w2, HostIface: left, Addrs: []netip.Prefix{pfx("192.168.100.2/32")}}
	if _, err := AddWorkload(leftSpec, in); err != nil {
		t.Fatal(err)
	}
	vs, err = WorkloadVethsExcept(map[string]bool{ours: true}, in)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 || vs[0].Name != left {
		t.Fatalf("WorkloadVethsExcept(%s) = %+v, want only %s", ours, vs, left)
	}
	if err := RemoveWorkload(left, in); err != nil {
		t.Fatal(err)
	}

	// Re-made since listed (a rerun of container add): spared.
	if err := RemoveWorkload(ours, in); err != nil {
		t.Fatal(err)
	}
	if _, err := AddWorkload(spec, in); err != nil {
		t.Fatal(err)
	}
	if err := DeleteWorkloadVeth(listed, in); err != nil {
		t.Fatal(err)
	}
	if !LinkExists(ours, in) {
		t.Fatal("a veth re-made under the listed name was deleted")
	}
	// As listed: deleted, its workload side with it; again: no error.
	vs, _ = WorkloadVeths(in)
	if err := DeleteWorkloadVeth(vs[0], in); err != nil {
		t.Fatal(err)
	}
	if LinkExists(ours, in) || LinkExists("eth0", InNetns(w)) {
		t.Fatal("listed veth not deleted")
	}
	if err := DeleteWorkloadVeth(vs[0], in); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	for _, n := range []string{"calinotours", other} {
		if !LinkExists(n, in) {
			t.Errorf("%s (not ours) was deleted", n)
		}
	}
	if !slices.Equal([]bool{isDerivedName(ours), isDerivedName("calinotours"), isDerivedName("caliABCDEF01234")}, []bool{true, false, false}) {
		t.Error("isDerivedName disagrees with api.WorkloadIfaceName's shape")
	}
}
