package nft

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
)

// The generators of the scale target (issue 14: 1000 endpoints, 200
// policies, 50 selectors), shared by the kernel tests and calico-bench's
// policy-v3 section so both measure the same policy.

// ScaleSelectors is how many distinct selectors the label policies use.
const ScaleSelectors = 50

// scalePool holds every generated endpoint address (10.64.x.y, one per
// endpoint).
var scalePool = netip.MustParsePrefix("10.64.0.0/10")

// ScalePolicy is what calc computes for nEndpoints endpoints spread over
// nProfiles profiles, labelled app=a<i mod 50>, and nPolicies label
// policies over the 50 selectors (see withLabelPolicies).
func ScalePolicy(nEndpoints, nProfiles, nPolicies int) calc.Policy {
	return withLabelPolicies(genPolicy(nEndpoints, nProfiles), nPolicies)
}

// ScaleRelabel is p with endpoint i labelled app=a<app> instead: its address
// moves to that selector's set and its inbound chain jumps to the policies
// selecting it. p is not modified.
func ScaleRelabel(p calc.Policy, i, app, nPolicies int) calc.Policy {
	p.Endpoints = slices.Clone(p.Endpoints)
	return relabel(p, i, app, nPolicies)
}

// genPolicy builds n endpoints spread over nProfiles seed-default profiles
// (tag = name, inbound from the tag, outbound anything), each endpoint with
// one IPv4 address, and the tag members that calc would compute.
func genPolicy(n, nProfiles int) calc.Policy {
	p := calc.Policy{
		Profiles:        map[string]api.Profile{},
		TagMembers:      map[string]calc.AddrSet{},
		MasqueradePools: []netip.Prefix{scalePool},
		AllPools:        []netip.Prefix{scalePool},
	}
	for j := 0; j < nProfiles; j++ {
		name := fmt.Sprintf("prof.%03d", j)
		p.Profiles[name] = api.NewProfile(name)
	}
	for i := 0; i < n; i++ {
		p = withEndpoint(p, i, nProfiles)
	}
	return p
}

// withEndpoint adds endpoint i (profile i mod nProfiles) to p, copying what
// it changes so earlier policies stay as they were.
func withEndpoint(p calc.Policy, i, nProfiles int) calc.Policy {
	addr := scaleAddr(i)
	prof := fmt.Sprintf("prof.%03d", i%nProfiles)
	p.Endpoints = append(slices.Clip(p.Endpoints), calc.EndpointPolicy{
		Interface: fmt.Sprintf("cali%011x", i),
		Addrs:     []netip.Addr{addr},
		Profiles:  []string{prof},
		Group:     calc.ProfileGroup([]string{prof}),
	})
	tm := make(map[string]calc.AddrSet, len(p.TagMembers))
	for k, v := range p.TagMembers {
		tm[k] = v
	}
	m := tm[prof]
	m.V4 = append(slices.Clip(m.V4), addr)
	tm[prof] = m
	p.TagMembers = tm
	return p
}

// withLabelPolicies adds nPolicies policies to p over 50 selectors, as
// calc would for endpoints labelled app=a<i%50>: policy j selects app
// a<j%50> and admits TCP 8080 from app a<(j+1)%50>.
func withLabelPolicies(p calc.Policy, nPolicies int) calc.Policy {
	p.Policies = map[string]calc.TierPolicy{}
	p.SelectorMembers = map[string]calc.SelectorMembers{}
	for j := range nPolicies {
		p.Policies[fmt.Sprintf("pol-%03d", j)] = calc.TierPolicy{Ingress: []calc.PolicyRule{{
			Action: "Allow", Protocol: 6, Src: calc.PolicyEntity{Selector: scaleSelector(j + 1)},
			Dst: calc.PolicyEntity{Ports: []api.PortRange{{Min: 8080, Max: 8080}}}}}}
	}
	p.Endpoints = slices.Clone(p.Endpoints)
	for i := range p.Endpoints {
		p = relabel(p, i, i%ScaleSelectors, nPolicies)
	}
	return p
}

// relabel gives endpoint i the label app=a<app>: the policies selecting
// it, and its address in that selector's set (out of any other).
func relabel(p calc.Policy, i, app, nPolicies int) calc.Policy {
	ep := &p.Endpoints[i]
	ep.IngressPolicies = nil
	for j := app; j < nPolicies; j += ScaleSelectors {
		ep.IngressPolicies = append(ep.IngressPolicies, fmt.Sprintf("pol-%03d", j))
	}
	members := make(map[string]calc.SelectorMembers, len(p.SelectorMembers)+1)
	addr := netip.PrefixFrom(ep.Addrs[0], 32)
	for k, m := range p.SelectorMembers {
		m.V4 = slices.DeleteFunc(slices.Clone(m.V4), func(x netip.Prefix) bool { return x == addr })
		members[k] = m
	}
	key := scaleSelector(app)
	m := members[key]
	m.V4 = append(m.V4, addr)
	members[key] = m
	p.SelectorMembers = members
	return p
}

// ScaleAddr is endpoint i's address in ScalePolicy.
func ScaleAddr(i int) string { return scaleAddr(i).String() }

// ScaleSelectorSet4 names the IPv4 set of selector app == "a<app>".
func ScaleSelectorSet4(app int) string { return selectorSet4(scaleSelector(app)) }

func scaleAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 64 + byte(i>>16), byte(i >> 8), byte(i)})
}

func scaleSelector(app int) string { return fmt.Sprintf(`app == "a%d"`, app%ScaleSelectors) }
