package calc

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func TestWireGuardRoutesPeersAndUnkeyedNodes(t *testing.T) {
	h2, h3 := "192.168.100.64/26", "192.168.100.192/26"
	wgRoute := func(dst string) Route {
		return Route{Dst: netip.MustParsePrefix(dst), Kind: RouteLocal, Dev: WireGuardDevice}
	}
	plain := Route{Dst: netip.MustParsePrefix(h3), Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.2.3"), Dev: api.VXLANDevice, OnLink: true}
	cases := []struct {
		name        string
		cfg         api.EncryptionConfig
		support     WireGuardSupport
		h2Route     Route
		h3Route     Route // h3 has published no key
		enabled     bool
		problemWith string
	}{
		{"off: plain routing", api.EncryptionConfig{}, WireGuardSupport{PublicKey: "k1"},
			Route{Dst: netip.MustParsePrefix(h2), Kind: RouteVia, Gateway: netip.MustParseAddr("10.0.1.2")}, plain, false, ""},
		{"on: keyed peer through the device, unkeyed unreachable", api.EncryptionConfig{Enabled: true}, WireGuardSupport{PublicKey: "k1"},
			wgRoute(h2), Route{Dst: netip.MustParsePrefix(h3), Kind: RouteUnreachable}, true, "node h3 has published no WireGuard key: its workloads are unreachable"},
		{"on, allow unencrypted: unkeyed peer in the clear", api.EncryptionConfig{Enabled: true, AllowUnencrypted: true}, WireGuardSupport{PublicKey: "k1"},
			wgRoute(h2), plain, true, "reached unencrypted"},
		{"on but no device here: nothing leaves in the clear", api.EncryptionConfig{Enabled: true}, WireGuardSupport{PublicKey: "k1", Problem: "no TUN"},
			Route{Dst: netip.MustParsePrefix(h2), Kind: RouteUnreachable}, Route{Dst: netip.MustParsePrefix(h3), Kind: RouteUnreachable}, false, "no TUN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := snapshot(api.Pool{CIDR: "192.168.100.0/24", VXLANMode: api.EncapCrossSubnet})
			s.Encryption = c.cfg
			n2 := s.Nodes["h2"]
			n2.WireGuardPublicKey = "k2"
			s.Nodes["h2"] = n2
			r := Compute(Input{Node: "h1", Snap: s, Learned: learned, WireGuard: c.support})
			if got := routeFor(t, r, h2); got != c.h2Route {
				t.Errorf("route %s = %+v, want %+v", h2, got, c.h2Route)
			}
			if got := routeFor(t, r, h3); got != c.h3Route {
				t.Errorf("route %s = %+v, want %+v", h3, got, c.h3Route)
			}
			wg := r.Dataplane.WireGuard
			if wg.Enabled != c.enabled {
				t.Fatalf("wireguard enabled = %v, want %v", wg.Enabled, c.enabled)
			}
			if c.problemWith != "" && !strings.Contains(strings.Join(r.Problems, "\n"), c.problemWith) {
				t.Errorf("problems %q lack %q", r.Problems, c.problemWith)
			}
			if !c.enabled {
				return
			}
			// Cryptokey routing: h2 may send only from its own block.
			want := WireGuardPeer{Node: "h2", PublicKey: "k2", Endpoint: netip.MustParseAddrPort("10.0.1.2:51820"), AllowedIPs: []netip.Prefix{netip.MustParsePrefix(h2)}}
			if len(wg.Peers) != 1 || wg.Peers[0].Node != want.Node || wg.Peers[0].Endpoint != want.Endpoint || len(wg.Peers[0].AllowedIPs) != 1 || wg.Peers[0].AllowedIPs[0] != want.AllowedIPs[0] {
				t.Errorf("peers = %+v, want [%+v]", wg.Peers, want)
			}
			// Cleartext from these sources to pool addresses is refused.
			wantFrom := "[192.168.100.0/24]"
			if c.cfg.AllowUnencrypted {
				wantFrom = "[" + h2 + "]"
			}
			if got := fmt.Sprint(wg.CleartextFrom); got != wantFrom || fmt.Sprint(wg.PoolDsts) != "[192.168.100.0/24]" {
				t.Errorf("cleartext refused from %s to %v, want from %s", got, wg.PoolDsts, wantFrom)
			}
			if wg.Device != WireGuardDevice || wg.MTU != WireGuardMTU || wg.ListenPort != WireGuardPort {
				t.Errorf("device = %+v", wg)
			}
		})
	}
}

// TestWireGuardPeersBeforeBGP: right after an agent restart, before BGP has
// re-learned anything, the kernel still routes into the device; the peers'
// allowed IPs come from their blocks and workloads in the datastore, so
// WireGuard has somewhere to send them (borrowed addresses included).
func TestWireGuardPeersBeforeBGP(t *testing.T) {
	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	s.Encryption = api.EncryptionConfig{Enabled: true}
	for _, n := range []string{"h1", "h2"} {
		nd := s.Nodes[n]
		nd.WireGuardPublicKey = "k" + n
		s.Nodes[n] = nd
	}
	// h2 also holds an address borrowed from h1's block.
	s.Endpoints["h2/w9"] = api.Endpoint{Node: "h2", Workload: "w9", InterfaceName: "calieee", IPv4Nets: []string{"192.168.100.9/32"}}
	honest(s) // derived interfaces, addresses held in IPAM: records the agents believe
	r := Compute(Input{Node: "h1", Snap: s, WireGuard: WireGuardSupport{PublicKey: "kh1"}})
	peers := r.Dataplane.WireGuard.Peers
	if len(peers) != 1 || fmt.Sprint(peers[0].AllowedIPs) != "[192.168.100.9/32 192.168.100.64/26]" {
		t.Fatalf("peers without learned routes = %+v, want h2 with its block and its borrowed address", peers)
	}
}
