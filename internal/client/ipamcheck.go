package client

import (
	"context"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
)

// CheckIPAM compares IPAM's allocations with the endpoints that exist, and
// lists the endpoint records the agents ignore because they name an
// interface or claim an address that is not theirs (calc.CheckEndpoints,
// the same check the agents run).
func (c *Client) CheckIPAM(ctx context.Context) (ipam.CheckReport, error) {
	eps, err := c.Endpoints(ctx, "")
	if err != nil {
		return ipam.CheckReport{}, err
	}
	blocks, err := datastore.List[api.Block](ctx, c.DS, datastore.PrefixBlocks)
	if err != nil {
		return ipam.CheckReport{}, err
	}
	snap := calc.NewSnapshot()
	live := map[string]bool{}
	for _, ep := range eps {
		snap.Endpoints[api.EndpointID(ep.Node, ep.Workload)] = ep
		live[api.WorkloadHandle(ep.Node, ep.Workload)] = true
		// A record keeps only its own handles alive: listing another's
		// would hide that handle's leak.
		for _, h := range ep.IPAMHandles {
			if api.OwnsHandle(ep, h) {
				live[h] = true
			}
		}
	}
	for _, kv := range blocks {
		snap.Blocks[kv.Value.CIDR] = kv.Value
	}
	rep, err := c.IPAM.Check(ctx, live)
	if err != nil {
		return rep, err
	}
	_, ignored := calc.CheckEndpoints(snap)
	for _, ig := range ignored {
		rep.Problems = append(rep.Problems, ig.String())
	}
	return rep, nil
}
