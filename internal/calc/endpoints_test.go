package calc

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

func ep(node, wl string, addrs ...string) api.Endpoint {
	e := api.Endpoint{Node: node, Workload: wl, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, wl), Profiles: []string{"P1"}}
	for _, a := range addrs {
		if netip.MustParseAddr(a).Is4() {
			e.IPv4Nets = append(e.IPv4Nets, a+"/32")
		} else {
			e.IPv6Nets = append(e.IPv6Nets, a+"/128")
		}
	}
	return e
}

func TestCheckEndpoints(t *testing.T) {
	libnet := func(e api.Endpoint) api.Endpoint { e.Orchestrator = api.OrchestratorLibnetwork; return e }
	cases := []struct {
		name string
		eps  []api.Endpoint
		// allocations: address -> handle
		alloc  map[string]string
		bigV4  bool              // the v4 block is a /16 (ordinals above 255)
		ignore map[string]string // key -> a word of the reason
	}{
		{name: "honest", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1", "fd00::1")},
			alloc: map[string]string{"10.1.0.1": "h1~w1", "fd00::1": "h1~w1"}},
		{name: "another workload's interface", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1"), func() api.Endpoint {
			e := ep("h1", "evil", "10.1.0.2")
			e.InterfaceName = api.WorkloadIfaceName("h1", "w1")
			return e
		}()}, alloc: map[string]string{"10.1.0.1": "h1~w1", "10.1.0.2": "h1~evil"},
			ignore: map[string]string{"h1/evil": "interface"}},
		{name: "no interface", eps: []api.Endpoint{func() api.Endpoint { e := ep("h1", "w1", "10.1.0.1"); e.InterfaceName = ""; return e }()},
			alloc: map[string]string{"10.1.0.1": "h1~w1"}, ignore: map[string]string{"h1/w1": "interface"}},
		{name: "the same workload name on another host", eps: []api.Endpoint{func() api.Endpoint {
			e := ep("h2", "w1", "10.1.0.1")
			e.InterfaceName = api.WorkloadIfaceName("h1", "w1")
			return e
		}()}, alloc: map[string]string{"10.1.0.1": "h2~w1"}, ignore: map[string]string{"h2/w1": "interface"}},
		{name: "address held by another workload", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1"), ep("h1", "evil", "10.1.0.1")},
			alloc: map[string]string{"10.1.0.1": "h1~w1"}, ignore: map[string]string{"h1/evil": "held in IPAM by h1~w1"}},
		{name: "address held by nobody, block exists", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1"), ep("h1", "evil", "10.1.0.9")},
			alloc: map[string]string{"10.1.0.1": "h1~w1"}, ignore: map[string]string{"h1/evil": "not assigned"}},
		{name: "address in no block", eps: []api.Endpoint{ep("h1", "evil", "10.9.0.1")},
			ignore: map[string]string{"h1/evil": "not assigned"}},
		{name: "one good address and one stolen", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1"), ep("h1", "evil", "10.1.0.2", "10.1.0.1")},
			alloc: map[string]string{"10.1.0.1": "h1~w1", "10.1.0.2": "h1~evil"}, ignore: map[string]string{"h1/evil": "10.1.0.1"}},
		{name: "libnetwork endpoint, driver handle of its node", eps: []api.Endpoint{libnet(ep("h1", "docker-abc", "10.1.0.1"))},
			alloc: map[string]string{"10.1.0.1": "h1~~libnetwork"}},
		{name: "libnetwork endpoint, driver handle of another node", eps: []api.Endpoint{libnet(ep("h1", "docker-abc", "10.1.0.1"))},
			alloc: map[string]string{"10.1.0.1": "h2~~libnetwork"}, ignore: map[string]string{"h1/docker-abc": "h2~~libnetwork"}},
		{name: "netns endpoint may not use the driver handle", eps: []api.Endpoint{ep("h1", "w1", "10.1.0.1")},
			alloc: map[string]string{"10.1.0.1": "h1~~libnetwork"}, ignore: map[string]string{"h1/w1": "held in IPAM"}},
		{name: "two libnetwork endpoints claim one address: both ignored", eps: []api.Endpoint{
			libnet(ep("h1", "docker-aaa", "10.1.0.1")), libnet(ep("h1", "docker-bbb", "10.1.0.1")), libnet(ep("h1", "docker-ccc", "10.1.0.3"))},
			alloc:  map[string]string{"10.1.0.1": "h1~~libnetwork", "10.1.0.3": "h1~~libnetwork"},
			ignore: map[string]string{"h1/docker-aaa": "also claimed by h1/docker-bbb", "h1/docker-bbb": "also claimed by h1/docker-aaa"}},
		{name: "large block: ordinal above 255", eps: []api.Endpoint{ep("h1", "w1", "10.1.2.7"), ep("h1", "w2", "10.1.3.7")}, bigV4: true,
			alloc: map[string]string{"10.1.2.7": "h1~w1", "10.1.3.7": "h1~w1"}, ignore: map[string]string{"h1/w2": "held in IPAM by h1~w1"}},
		{name: "IPv6 ordinal", eps: []api.Endpoint{ep("h1", "w1", "fd00::3f"), ep("h1", "w2", "fd00::3e")},
			alloc: map[string]string{"fd00::3f": "h1~w1", "fd00::3e": "h1~w1"}, ignore: map[string]string{"h1/w2": "held in IPAM by h1~w1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := NewSnapshot()
			v4 := "10.1.0.0/26"
			if c.bigV4 {
				v4 = "10.1.0.0/16"
			}
			s.Blocks[v4] = api.Block{CIDR: v4, Affinity: "h1"}
			s.Blocks["fd00::/122"] = api.Block{CIDR: "fd00::/122", Affinity: "h1"}
			for a, h := range c.alloc {
				allocate(s, netip.MustParseAddr(a), h)
			}
			for _, e := range c.eps {
				s.Endpoints[e.Node+"/"+e.Workload] = e
			}
			acc, ign := CheckEndpoints(s)
			got := map[string]string{}
			for _, ig := range ign {
				got[ig.Key] = ig.Reason
			}
			for key, word := range c.ignore {
				if !strings.Contains(got[key], word) {
					t.Errorf("%s: reason %q, want one mentioning %q", key, got[key], word)
				}
				if _, ok := acc[key]; ok {
					t.Errorf("%s accepted", key)
				}
			}
			for key, reason := range got {
				if _, want := c.ignore[key]; !want {
					t.Errorf("%s ignored: %s", key, reason)
				}
			}
			if len(acc)+len(ign) != len(c.eps) {
				t.Errorf("%d accepted + %d ignored, want %d endpoints", len(acc), len(ign), len(c.eps))
			}
			if !slices.IsSortedFunc(ign, func(a, b IgnoredEndpoint) int { return strings.Compare(a.Key, b.Key) }) {
				t.Errorf("ignored not sorted: %+v", ign)
			}
		})
	}
}

// A lying record changes nothing the calculation outputs for the honest
// ones: no route, no policy, no tag membership, no announcement. It is
// reported: in detail on its own host, as a count elsewhere.
func TestLyingEndpointsChangeNothing(t *testing.T) {
	base := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	want1 := Compute(Input{Node: "h1", Snap: base, Learned: learned})
	want2 := Compute(Input{Node: "h2", Snap: base, Learned: learned})
	if len(want1.Dataplane.Policy.Endpoints) != 2 || len(want1.Problems) != 0 {
		t.Fatalf("honest snapshot: %d endpoints, problems %v", len(want1.Dataplane.Policy.Endpoints), want1.Problems)
	}

	s := snapshot(api.Pool{CIDR: "192.168.100.0/24"})
	// w1's veth, in P2, with an address of its own.
	veth := ep("h1", "evil-veth", "192.168.100.50")
	veth.InterfaceName = api.WorkloadIfaceName("h1", "w1")
	veth.Profiles = []string{"P2"}
	allocate(s, netip.MustParseAddr("192.168.100.50"), "h1~evil-veth")
	// w3's address (on h2) claimed on h1 for P2.
	steal := ep("h1", "evil-steal", "192.168.100.65")
	steal.Profiles = []string{"P2"}
	// A free address claimed for P1 on h2.
	free := ep("h2", "evil-free", "192.168.100.70")
	for _, e := range []api.Endpoint{veth, steal, free} {
		s.Endpoints[e.Node+"/"+e.Workload] = e
	}
	got1 := Compute(Input{Node: "h1", Snap: s, Learned: learned})
	got2 := Compute(Input{Node: "h2", Snap: s, Learned: learned})
	if !reflect.DeepEqual(got1.Dataplane, want1.Dataplane) || !reflect.DeepEqual(got1.Announce, want1.Announce) {
		t.Errorf("h1's dataplane changed:\n got %+v\nwant %+v", got1.Dataplane, want1.Dataplane)
	}
	if !reflect.DeepEqual(got2.Dataplane, want2.Dataplane) || !reflect.DeepEqual(got2.Announce, want2.Announce) {
		t.Errorf("h2's dataplane changed:\n got %+v\nwant %+v", got2.Dataplane, want2.Dataplane)
	}
	if len(got1.Ignored) != 3 || len(got2.Ignored) != 3 {
		t.Errorf("ignored: h1 %+v, h2 %+v", got1.Ignored, got2.Ignored)
	}
	joined := strings.Join(got1.Problems, "\n")
	for _, w := range []string{"h1/evil-steal", "h1/evil-veth", "1 endpoint record(s) of other hosts"} {
		if !strings.Contains(joined, w) {
			t.Errorf("h1's problems do not mention %q:\n%s", w, joined)
		}
	}
	if strings.Contains(joined, "h2/evil-free") {
		t.Errorf("h1 reports h2's record in detail:\n%s", joined)
	}
	// Deterministic whatever the map order.
	for range 20 {
		if again := Compute(Input{Node: "h1", Snap: s, Learned: learned}); !reflect.DeepEqual(again, got1) {
			t.Fatalf("Compute is not deterministic with lying records")
		}
	}
	// Once IPAM gives the free address to evil-free, it is believed.
	allocate(s, netip.MustParseAddr("192.168.100.70"), "h2~evil-free")
	got2 = Compute(Input{Node: "h2", Snap: s, Learned: learned})
	if !slices.Contains(got2.Dataplane.Policy.TagMembers["P1"].V4, netip.MustParseAddr("192.168.100.70")) {
		t.Errorf("an endpoint whose address IPAM holds for it is not in its tag set: %+v", got2.Dataplane.Policy.TagMembers)
	}
}
