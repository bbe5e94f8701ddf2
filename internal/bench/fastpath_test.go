package bench

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/calico-go/calico/internal/dataplane/fastpath"
)

// TestWlSrc4 reads the fast path's workloads from a table as nft lists it:
// elements of wl-src4 only (not wl-src6's, nor another set's), grouped by
// interface.
func TestWlSrc4(t *testing.T) {
	table := `table inet calico {
	set wl-src4 {
		type ifname . ipv4_addr
		elements = { "cali1a2b3c4d5e6" . 192.168.100.1,
			     "cali9f8e7d6c5b4" . 192.168.100.2,
			     "cali1a2b3c4d5e6" . 192.168.100.3 }
	}
	set other4 {
		type ifname . ipv4_addr
		elements = { "califfffffffff0" . 10.9.9.9 }
	}
}
`
	got, err := wlSrc4(table)
	if err != nil {
		t.Fatal(err)
	}
	want := []fastpath.Workload{
		{Iface: "cali1a2b3c4d5e6", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.1"), netip.MustParseAddr("192.168.100.3")}},
		{Iface: "cali9f8e7d6c5b4", Addrs: []netip.Addr{netip.MustParseAddr("192.168.100.2")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := wlSrc4("table inet calico {\n}\n"); err == nil {
		t.Error("a table without wl-src4 gave no error")
	}
}
