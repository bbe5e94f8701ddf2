package client

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/calico-go/calico/internal/ipam"
)

// CheckIPAM compares IPAM's allocations with the endpoints that exist.
func (c *Client) CheckIPAM(ctx context.Context) (ipam.CheckReport, error) {
	live, err := c.liveHandles(ctx)
	if err != nil {
		return ipam.CheckReport{}, err
	}
	return c.IPAM.Check(ctx, live)
}

// liveHandles are the IPAM handles of the endpoints that exist.
func (c *Client) liveHandles(ctx context.Context) (map[string]bool, error) {
	eps, err := c.Endpoints(ctx, "")
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, ep := range eps {
		live[handleID(ep.Node, ep.Workload)] = true
		for _, h := range ep.IPAMHandles {
			live[h] = true
		}
	}
	return live, nil
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
