package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/ipam"
)

// IPAM says who holds an address by handle (node~workload, or
// node~~libnetwork for every address of the Docker drivers on a node),
// which is no name a user knows. TakenBy turns that into the workload or
// container holding it.

// described is an error with a better message; errors.Is still sees the cause.
type described struct {
	msg string
	err error
}

func (d described) Error() string { return d.msg }
func (d described) Unwrap() error { return d.err }

// TakenBy rewrites the "already assigned" error of assigning a so that it
// names the workload holding a (a Docker container by its name) rather
// than an IPAM handle. Other errors, and any it cannot explain, pass through.
func (c *Client) TakenBy(ctx context.Context, a netip.Addr, err error) error {
	if !errors.Is(err, ipam.ErrAlreadyAssigned) {
		return err
	}
	who := c.holder(ctx, a)
	if who == "" {
		return err
	}
	return described{msg: fmt.Sprintf("%s is already assigned to %s; choose another address", a, who), err: err}
}

// holder describes who holds a: the endpoint with that address, else
// what its IPAM handle says; "" when nothing can be learnt.
func (c *Client) holder(ctx context.Context, a netip.Addr) string {
	if eps, err := c.Endpoints(ctx, ""); err == nil {
		p := netip.PrefixFrom(a, a.BitLen()).String()
		for _, ep := range eps {
			if slices.Contains(ep.IPv4Nets, p) || slices.Contains(ep.IPv6Nets, p) {
				return DescribeEndpoint(ep)
			}
		}
	}
	info, err := c.IPAM.Info(ctx, a)
	if err != nil || !info.Assigned {
		return ""
	}
	if node, ok := strings.CutSuffix(info.Handle, "~~libnetwork"); ok {
		return fmt.Sprintf("a Docker container on host %s (calico-ipam gave it; the container is being made, or its network was given that address with --ip-range or --aux-address)", node)
	}
	if node, name, ok := strings.Cut(info.Handle, "~"); ok {
		return fmt.Sprintf("workload %q on host %s, which has no endpoint (an add in progress or interrupted; `calicoctl ipam check` lists it)", name, node)
	}
	return ""
}

// DescribeEndpoint names ep's workload as users know it: a Docker
// container by its name, with the workload name when that differs.
func DescribeEndpoint(ep api.Endpoint) string {
	if _, name := ep.DockerContainer(); name != "" {
		if name == ep.Workload {
			return fmt.Sprintf("Docker container %q on host %s", name, ep.Node)
		}
		return fmt.Sprintf("Docker container %q on host %s (workload %s)", name, ep.Node, ep.Workload)
	}
	return fmt.Sprintf("workload %q on host %s (%s)", ep.Workload, ep.Node, ep.Orchestrator)
}
