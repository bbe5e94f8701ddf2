package cni

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestRequestedAddressStaysInNetworkPools: network "tenant" is held to
// the pool walkthrough.Pool by its conflist (ipv4_pools) and lets the
// runtime request addresses (capability "ips", which in a cluster carries
// what a pod's author wrote). A pod asks for an address in another
// network's pool, 192.168.200.0/24; before, it got it, and with it
// whatever trusts that range. It is refused, through the agent and
// through the plugin alone (calico-ipam under another plugin reads the
// same requestedIPs), and takes nothing; an address inside the tenant's
// pool is still granted.
func TestRequestedAddressStaysInNetworkPools(t *testing.T) {
	for _, via := range []string{"agent", "plugin"} {
		t.Run(via, func(t *testing.T) {
			if via == "plugin" {
				t.Setenv("CALICO_CNI_SOCKET", "none")
			}
			w := world(t)
			ctx := e2etest.Ctx(t, 3*time.Minute)
			h1 := w.Hosts[0]
			const other = "192.168.200.0/24"
			if _, err := w.Ctl(ctx, h1, "pool", "add", other); err != nil {
				t.Fatal(err)
			}
			rt := runtime(t, h1)
			tenant := conflist(t, "tenant", w.Etcd, map[string]any{
				"capabilities": map[string]bool{"ips": true},
				"ipam":         map[string]any{"type": "calico-ipam", "ipv4_pools": []string{walkthrough.Pool}},
			})
			ns, err := w.Lab.AddWorkloadNetns(h1, "thief")
			if err != nil {
				t.Fatal(err)
			}
			used := usedAddrs(t, ctx, w)
			rc := &libcni.RuntimeConf{ContainerID: "thief", NetNS: ns.Path, IfName: "eth0",
				CapabilityArgs: map[string]any{"ips": []string{"192.168.200.5/32"}}}
			if r, err := rt.AddNetworkList(ctx, tenant, rc); err == nil {
				t.Errorf("ADD asking for 192.168.200.5 on a network held to %s: granted %v", walkthrough.Pool, r)
			} else if !strings.Contains(err.Error(), "outside this network's pools") {
				t.Errorf("ADD asking for 192.168.200.5: refused for another reason: %v", err)
			}
			if u := usedAddrs(t, ctx, w); u != used {
				t.Errorf("the refused ADD took an address: %d assigned before, %d after", used, u)
			}
			if _, found := findEndpoint(t, ctx, w, "thief.eth0"); found {
				t.Errorf("the refused ADD left an endpoint")
			}
			want := netip.MustParseAddr("192.168.100.50")
			_, _, res := attach(t, ctx, w, rt, tenant, h1, "honest", func(rc *libcni.RuntimeConf) {
				rc.CapabilityArgs = map[string]any{"ips": []string{want.String() + "/32"}}
			})
			if a := addrOf(t, res); a != want {
				t.Errorf("ADD asking for %s in the tenant's pool got %s", want, a)
			}
		})
	}
}
