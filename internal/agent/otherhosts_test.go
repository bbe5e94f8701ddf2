package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
)

// TestOtherHosts: only other hosts' endpoints and blocks spare a pass its
// read-back of the kernel; anything of this host, or of the cluster's
// configuration, does not.
func TestOtherHosts(t *testing.T) {
	s := calc.NewSnapshot()
	s.Blocks["10.90.1.0/26"] = api.Block{CIDR: "10.90.1.0/26", Affinity: "h1"}
	s.Blocks["10.90.2.0/26"] = api.Block{CIDR: "10.90.2.0/26", Affinity: "h2"}
	for key, want := range map[string]bool{
		datastore.EndpointKey("h2", "w1"):      true,
		datastore.EndpointKey("h1", "w1"):      false,
		datastore.BlockKey("10.90.2.0/26"):     true,
		datastore.BlockKey("10.90.3.0/26"):     true, // none yet: nobody's
		datastore.BlockKey("10.90.1.0/26"):     false,
		datastore.NodeKey("h2"):                false,
		datastore.NodePeerKey("h2", "1.2.3.4"): false,
		datastore.ProfileKey("P"):              false,
		datastore.PoolKey("10.90.0.0/16"):      false,
		datastore.KeyBGPConfig:                 false,
	} {
		if got := otherHosts(s, key, "h1"); got != want {
			t.Errorf("otherHosts(%s) = %v, want %v", key, got, want)
		}
	}
}

// TestSameDesired: routes compare in any order (a learned pass appends),
// anything else of the dataplane, BGP's announcements or peers differs.
func TestSameDesired(t *testing.T) {
	r1 := calc.Route{Dst: netip.MustParsePrefix("10.90.1.0/26"), Kind: calc.RouteBlackhole}
	r2 := calc.Route{Dst: netip.MustParsePrefix("10.90.2.0/26"), Kind: calc.RouteVia, Gateway: netip.MustParseAddr("10.0.0.2")}
	base := calc.Result{ASN: 64512, Announce: []netip.Prefix{r1.Dst}}
	base.Dataplane.Routes = []calc.Route{r1, r2}
	swapped := base
	swapped.Dataplane.Routes = []calc.Route{r2, r1}
	if !sameDesired(base, swapped) || base.Dataplane.Routes[0] != r1 {
		t.Error("the same routes in another order differ (or the comparison changed its argument)")
	}
	for name, change := range map[string]func(r *calc.Result){
		"a route less": func(r *calc.Result) { r.Dataplane.Routes = r.Dataplane.Routes[:1] },
		"another gateway": func(r *calc.Result) {
			r.Dataplane.Routes = []calc.Route{r1, {Dst: r2.Dst, Kind: calc.RouteVia, Gateway: netip.MustParseAddr("10.0.0.3")}}
		},
		"an announcement":    func(r *calc.Result) { r.Announce = nil },
		"a peer":             func(r *calc.Result) { r.Peers = []calc.Peer{{IP: netip.MustParseAddr("10.0.0.3")}} },
		"the tunnel":         func(r *calc.Result) { r.Dataplane.VXLAN.Enabled = true },
		"a workload's iface": func(r *calc.Result) { r.Dataplane.Workloads = []calc.WorkloadIface{{Interface: "cali1"}} },
	} {
		other := base
		other.Dataplane.Routes = slices.Clone(base.Dataplane.Routes)
		change(&other)
		if sameDesired(base, other) {
			t.Errorf("%s: no difference seen", name)
		}
	}
}
