package cni

import (
	"errors"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/calico-go/calico/internal/api"
)

func TestParseConf(t *testing.T) {
	for _, c := range []struct {
		conf string
		code uint   // 0: accepted
		want string // in the message
	}{
		{`{"name":"net1","ipam":{"type":"calico-ipam"}}`, 0, ""},
		{`{"name":"net1","ipam":{"type":"calico-ipam","assign_ipv4":"false","assign_ipv6":true}}`, 0, ""},
		{`{"name":"net1"`, types.ErrDecodingFailure, "JSON"},
		{`{"ipam":{"type":"calico-ipam"}}`, types.ErrInvalidNetworkConfig, "no name"},
		{`{"name":"net1","ipam":{"type":"host-local"}}`, types.ErrInvalidNetworkConfig, "calico-ipam"},
		{`{"name":"bad name","ipam":{"type":"calico-ipam"}}`, types.ErrInvalidNetworkConfig, "profile"},
		{`{"name":"net1","ipam":{"type":"calico-ipam","ipv4_pools":["10.0.0.0/33"]}}`, types.ErrInvalidNetworkConfig, "10.0.0.0/33"},
		{`{"name":"net1","ipam":{"type":"calico-ipam","assign_ipv4":"maybe"}}`, types.ErrDecodingFailure, "true or false"},
		{`{"name":"net1","ipam":{"type":"calico-ipam","assign_ipv4":false}}`, types.ErrInvalidNetworkConfig, "assigns no address"},
		{`{"name":"net1","ipam":{"type":"calico-ipam"},"labels":{"a b":"c"}}`, types.ErrInvalidNetworkConfig, "label key"},
		{`{"name":"net1","ipam":{"type":"calico-ipam"},"mtu":20}`, types.ErrInvalidNetworkConfig, "mtu"},
	} {
		_, err := ParseConf([]byte(c.conf))
		var te *types.Error
		switch {
		case c.code == 0 && err != nil:
			t.Errorf("%s: %v", c.conf, err)
		case c.code != 0 && (!errors.As(err, &te) || te.Code != c.code || !strings.Contains(te.Msg, c.want)):
			t.Errorf("%s: got %v, want code %d mentioning %q", c.conf, err, c.code, c.want)
		}
	}
}

func TestRequestAndLabels(t *testing.T) {
	c, err := ParseConf([]byte(`{"name":"net1","ipam":{"type":"calico-ipam","assign_ipv6":"true","ipv4_pools":["192.168.0.0/16"]},"labels":{"app":"web"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ips, _ := c.requestedIPs(); !slices.Equal(ips, []string{"auto", "auto6"}) {
		t.Errorf("requested %v", ips)
	}
	if !slices.Equal(c.Profiles, []string{"net1"}) || !slices.Equal(c.IPAM.pools(), []string{"192.168.0.0/16"}) {
		t.Errorf("profiles %v pools %v", c.Profiles, c.IPAM.pools())
	}
	c.RuntimeConfig.IPs = []string{"192.168.1.7/24"}
	if ips, _ := c.requestedIPs(); !slices.Equal(ips, []string{"192.168.1.7"}) {
		t.Errorf("requested with ips capability: %v", ips)
	}
	// A requested address stays in the network's pools of its family
	// (none named for IPv6 here: any).
	c.RuntimeConfig.IPs = []string{"10.9.0.5/32"}
	if ips, err := c.requestedIPs(); err == nil || !strings.Contains(err.Error(), "outside this network's pools") {
		t.Errorf("requested 10.9.0.5 outside ipv4_pools 192.168.0.0/16: %v, %v", ips, err)
	}
	c.RuntimeConfig.IPs = []string{"fd00::5"}
	if ips, err := c.requestedIPs(); err != nil || !slices.Equal(ips, []string{"fd00::5"}) {
		t.Errorf("requested fd00::5 with no ipv6_pools: %v, %v", ips, err)
	}
	c.RuntimeConfig.IPs = nil
	l, err := c.endpointLabels("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1;FOO=bar")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"app": "web", LabelNamespace: "prod", LabelPod: "web-1", LabelNetwork: "net1"}; !maps.Equal(l, want) {
		t.Errorf("labels %v, want %v", l, want)
	}
	// A conflist cannot label its endpoints as another network's (whose
	// GC would then remove them).
	c.Labels[LabelNetwork] = "net2"
	if l, _ := c.endpointLabels(""); l[LabelNetwork] != "net1" {
		t.Errorf("network label %q, want net1", l[LabelNetwork])
	}
	delete(c.Labels, LabelNetwork)
	if c.Labels[LabelPod] != "" {
		t.Errorf("the conflist's labels were changed: %v", c.Labels)
	}
	if _, err := c.endpointLabels("FOO=bar"); err == nil {
		t.Errorf("unknown CNI_ARGS without IgnoreUnknown accepted")
	}
	if _, err := WorkloadName("abc", "eth0"); err != nil {
		t.Error(err)
	}
	if _, err := WorkloadName("../x", "eth0"); err == nil {
		t.Error("container id ../x accepted")
	}
}

// The example conflist the README shows is one ParseConf accepts.
func TestExampleConflist(t *testing.T) {
	b, err := os.ReadFile("../../cmd/calico/10-calico.conflist")
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Plugins) != 2 || l.Plugins[0].Network.Type != "calico" || l.Plugins[1].Network.Type != "portmap" {
		t.Fatalf("plugins %+v", l.Plugins)
	}
	conf, err := libcni.InjectConf(l.Plugins[0], map[string]any{"name": l.Name, "cniVersion": l.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConf(conf.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Profiles, []string{"calico"}) {
		t.Errorf("profiles %v, want the network's name", c.Profiles)
	}
}

// A prevResult from an earlier plugin is kept, ours appended after it.
func TestChained(t *testing.T) {
	conf := &types.NetConf{CNIVersion: "1.0.0", RawPrevResult: map[string]any{
		"cniVersion": "1.0.0",
		"interfaces": []any{map[string]any{"name": "lo0"}},
		"ips":        []any{map[string]any{"address": "10.9.0.1/32", "interface": 0}},
		"dns":        map[string]any{"nameservers": []string{"10.9.0.53"}},
	}}
	ep := api.Endpoint{InterfaceName: "cali123", WorkloadIface: "eth0", IPv4Nets: []string{"192.168.100.5/32"}, NetnsPath: "/run/netns/x"}
	res, err := result(ep)
	if err != nil {
		t.Fatal(err)
	}
	got, err := chained(conf, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Interfaces) != 3 || got.Interfaces[0].Name != "lo0" || got.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %+v", got.Interfaces)
	}
	if len(got.IPs) != 2 || got.IPs[0].Address.String() != "10.9.0.1/32" || *got.IPs[1].Interface != 2 || got.IPs[1].Gateway.String() != "169.254.1.1" {
		t.Errorf("ips %+v", got.IPs)
	}
	if len(got.DNS.Nameservers) != 1 || len(got.Routes) != 1 {
		t.Errorf("dns %+v routes %v", got.DNS, got.Routes)
	}
	if same, _ := chained(&types.NetConf{}, res); same != res {
		t.Errorf("without prevResult the result changed")
	}
}

// What every ADD does before it touches the datastore: the conflist, the
// requested addresses and the labels.
func BenchmarkAddPrologue(b *testing.B) {
	conf := []byte(`{"cniVersion":"1.1.0","name":"net1","type":"calico","etcd_endpoints":"http://10.0.0.1:2379","ipam":{"type":"calico-ipam","ipv4_pools":["10.64.0.0/16"]},"labels":{"app":"web"}}`)
	b.ReportAllocs()
	for range b.N {
		c, err := ParseConf(conf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.requestedIPs(); err != nil {
			b.Fatal(err)
		}
		if _, err := c.endpointLabels("IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1"); err != nil {
			b.Fatal(err)
		}
		if _, err := WorkloadName("0123456789abcdef0123456789abcdef", "eth0"); err != nil {
			b.Fatal(err)
		}
	}
}
