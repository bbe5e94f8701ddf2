package client

import (
	"context"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/ipam"
)

// CheckIPAM compares IPAM's allocations with the endpoints that exist.
func (c *Client) CheckIPAM(ctx context.Context) (ipam.CheckReport, error) {
	eps, err := c.Endpoints(ctx, "")
	if err != nil {
		return ipam.CheckReport{}, err
	}
	live := map[string]bool{}
	for _, ep := range eps {
		live[api.WorkloadHandle(ep.Node, ep.Workload)] = true
		for _, h := range ep.IPAMHandles {
			live[h] = true
		}
	}
	return c.IPAM.Check(ctx, live)
}
