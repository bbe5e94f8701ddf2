package libnetwork

import (
	"net/netip"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// The interface that gives the gateway gives its on-link /32 too; the
// others give neither (the engine refused the second identical /32 with
// "file exists") and turn the engine's gateway service off; every one
// routes its own pools.
func TestJoinResponseSeveralNetworks(t *testing.T) {
	pool := []netip.Prefix{netip.MustParsePrefix("192.168.21.0/24")}
	a := api.Endpoint{IPv4Nets: []string{"192.168.20.2/32"}}
	b := api.Endpoint{IPv4Nets: []string{"192.168.21.2/32"}}

	first := joinResponse("tmpx", a, true, true, pool)
	if first.Gateway != gatewayV4 || first.DisableGatewayService {
		t.Errorf("first interface: gateway %q, gateway service off %v; want %s, on", first.Gateway, first.DisableGatewayService, gatewayV4)
	}
	var dests []string
	for _, r := range first.StaticRoutes {
		if r.RouteType != 1 {
			t.Errorf("route %s: type %d, want 1 (connected)", r.Destination, r.RouteType)
		}
		dests = append(dests, r.Destination)
	}
	if len(dests) != 2 || dests[0] != gatewayV4+"/32" || dests[1] != "192.168.21.0/24" {
		t.Errorf("first interface routes %v, want [%s/32 192.168.21.0/24]", dests, gatewayV4)
	}

	second := joinResponse("tmpy", b, false, false, pool)
	if second.Gateway != "" || second.GatewayIPv6 != "" || !second.DisableGatewayService {
		t.Errorf("second interface: gateway %q/%q, gateway service off %v; want none, off", second.Gateway, second.GatewayIPv6, second.DisableGatewayService)
	}
	if len(second.StaticRoutes) != 1 || second.StaticRoutes[0].Destination != "192.168.21.0/24" {
		t.Errorf("second interface routes %+v, want only its pool", second.StaticRoutes)
	}

	// An IPv6-only endpoint gives the IPv6 gateway only.
	v6 := api.Endpoint{IPv6Nets: []string{"fd00:4::2/128"}}
	third := joinResponse("tmpz", v6, true, true, nil)
	if third.GatewayIPv6 != gatewayV6 || third.Gateway != "" || third.DisableGatewayService {
		t.Errorf("first IPv6 interface: gateway %q/%q, service off %v", third.Gateway, third.GatewayIPv6, third.DisableGatewayService)
	}
}
