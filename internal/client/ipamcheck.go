package client

import (
	"context"
	"fmt"
	"net/netip"

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
	for _, ep := range eps {
		snap.Endpoints[api.EndpointID(ep.Node, ep.Workload)] = ep
	}
	for _, kv := range blocks {
		snap.Blocks[kv.Value.CIDR] = kv.Value
	}
	rep, err := c.IPAM.Check(ctx, liveHandlesOf(eps))
	if err != nil {
		return rep, err
	}
	_, ignored := calc.CheckEndpoints(snap)
	for _, ig := range ignored {
		rep.Problems = append(rep.Problems, ig.String())
	}
	return rep, nil
}

// liveHandles are the IPAM handles of the endpoints that exist.
func (c *Client) liveHandles(ctx context.Context) (map[string]bool, error) {
	eps, err := c.Endpoints(ctx, "")
	if err != nil {
		return nil, err
	}
	return liveHandlesOf(eps), nil
}

func liveHandlesOf(eps []api.Endpoint) map[string]bool {
	live := map[string]bool{}
	for _, ep := range eps {
		live[api.WorkloadHandle(ep.Node, ep.Workload)] = true
		// A record keeps only its own handles alive: listing another's
		// would hide that handle's leak.
		for _, h := range ep.IPAMHandles {
			if api.OwnsHandle(ep, h) {
				live[h] = true
			}
		}
	}
	return live
}

// ReleaseLeaked is `calicoctl ipam release`: it frees an address whose
// holder has no endpoint (what `ipam check` calls leaked) and returns the
// holder. An address a live endpoint holds is refused unless force: freed,
// it would be handed out again while that workload still uses it. The
// release names the holder seen, so an address that changes hands meanwhile
// is left alone.
func (c *Client) ReleaseLeaked(ctx context.Context, ip netip.Addr, force bool) (string, error) {
	in, err := c.IPAM.Info(ctx, ip)
	if err != nil || !in.Assigned {
		// Not assigned, or outside every pool: Release says which.
		return c.IPAM.Release(ctx, ip)
	}
	if !force {
		live, err := c.liveHandles(ctx)
		if err != nil {
			return "", err
		}
		if live[in.Handle] {
			return "", fmt.Errorf("%s is held by %s, whose endpoint exists; remove that workload or its address (`calicoctl container NAME ip remove %s`) instead, or give --force", ip, in.Handle, ip)
		}
	}
	return in.Handle, c.IPAM.ReleaseFrom(ctx, ip, in.Handle)
}
