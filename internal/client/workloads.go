package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	netdev "github.com/calico-go/calico/internal/dataplane/netlink"
	"github.com/calico-go/calico/internal/datastore"
)

// handleID names a workload's addresses in IPAM. '~' cannot occur in names,
// so node and workload never run together ambiguously.
func handleID(node, workload string) string { return node + "~" + workload }

// EndpointID is the stable id the host interface name is derived from.
func EndpointID(node, workload string) string { return node + "/" + workload }

// WorkloadRequest is `container add` in data.
type WorkloadRequest struct {
	Node         string
	Name         string
	IPs          []string // addresses, or "auto" (IPv4) / "auto6"
	NetnsPath    string
	Interface    string // inside the workload; eth0 by default
	Orchestrator string // netns, docker, libnetwork
	ContainerID  string
	Profiles     []string
	// Routes, when set, are what the workload routes through us, instead
	// of everything (it keeps its default route on another network).
	Routes []netip.Prefix
}

// Endpoint reads one workload's endpoint.
func (c *Client) Endpoint(ctx context.Context, node, name string) (api.Endpoint, int64, error) {
	ep, rev, err := datastore.Get[api.Endpoint](ctx, c.DS, datastore.EndpointKey(node, name))
	if err != nil {
		return ep, 0, notFound(err, "unknown container %q on host %s; list them with `calicoctl endpoint show`", name, node)
	}
	return ep, rev, nil
}

// Endpoints lists endpoints of one node, or of all nodes when node is "".
func (c *Client) Endpoints(ctx context.Context, node string) ([]api.Endpoint, error) {
	kvs, err := datastore.List[api.Endpoint](ctx, c.DS, datastore.PrefixHosts)
	if err != nil {
		return nil, err
	}
	var out []api.Endpoint
	for _, kv := range kvs {
		if !strings.Contains(kv.Key, "/endpoint/") || node != "" && kv.Value.Node != node {
			continue
		}
		out = append(out, kv.Value)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Workload < out[j].Workload
	})
	return out, nil
}

// AddWorkload gives a workload an interface and addresses on this host.
// Order: validate, take addresses, wire the veth, record the endpoint; each
// step's failure undoes the ones before it.
func (c *Client) AddWorkload(ctx context.Context, req WorkloadRequest) (api.Endpoint, error) {
	var ep api.Endpoint
	if err := api.ValidateName("container", req.Name); err != nil {
		return ep, err
	}
	if len(req.IPs) == 0 {
		return ep, fmt.Errorf("container %q: give an IP address or auto", req.Name)
	}
	if req.Interface == "" {
		req.Interface = "eth0"
	}
	if req.Orchestrator == "" {
		req.Orchestrator = "netns"
	}
	if err := checkNetns(req.NetnsPath); err != nil {
		return ep, fmt.Errorf("container %q: %v", req.Name, err)
	}
	if _, err := c.Node(ctx, req.Node); err != nil {
		return ep, err
	}
	for _, p := range req.Profiles {
		if _, err := c.Profile(ctx, p); err != nil {
			return ep, err
		}
	}
	if _, _, err := c.DS.GetRaw(ctx, datastore.EndpointKey(req.Node, req.Name)); err == nil {
		return ep, fmt.Errorf("container %q already has an endpoint on host %s; remove it first with `calicoctl container remove %s`", req.Name, req.Node, req.Name)
	} else if !errors.Is(err, datastore.ErrNotFound) {
		return ep, err
	}
	var fixed []netip.Addr
	for _, s := range req.IPs {
		if s == "auto" || s == "auto6" {
			continue
		}
		a, err := api.ParseWorkloadIP(s)
		if err != nil {
			return ep, err
		}
		fixed = append(fixed, a)
	}

	handle := handleID(req.Node, req.Name)
	var undo []func()
	fail := func(err error) (api.Endpoint, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return api.Endpoint{}, err
	}
	var addrs []netip.Addr
	for _, s := range req.IPs {
		var a netip.Addr
		var err error
		switch s {
		case "auto":
			a, err = c.IPAM.AutoAssign(ctx, handle, req.Node, 4, nil)
		case "auto6":
			a, err = c.IPAM.AutoAssign(ctx, handle, req.Node, 6, nil)
		default:
			a = fixed[0]
			fixed = fixed[1:]
			err = c.IPAM.Assign(ctx, a, handle, req.Node)
		}
		if err != nil {
			return fail(err)
		}
		addr := a
		undo = append(undo, func() { c.IPAM.Release(context.WithoutCancel(ctx), addr) })
		addrs = append(addrs, a)
	}

	mtu, err := c.workloadMTU(ctx, addrs)
	if err != nil {
		return fail(err)
	}
	ep = api.Endpoint{
		Node:          req.Node,
		Workload:      req.Name,
		Orchestrator:  req.Orchestrator,
		ContainerID:   req.ContainerID,
		NetnsPath:     req.NetnsPath,
		InterfaceName: netdev.HostIfaceName(EndpointID(req.Node, req.Name)),
		WorkloadIface: req.Interface,
		Profiles:      append([]string{}, req.Profiles...),
	}
	var prefixes []netip.Prefix
	for _, a := range addrs {
		p := netip.PrefixFrom(a, a.BitLen())
		prefixes = append(prefixes, p)
		if a.Is4() {
			ep.IPv4Nets = append(ep.IPv4Nets, p.String())
		} else {
			ep.IPv6Nets = append(ep.IPv6Nets, p.String())
		}
	}
	mac, err := netdev.AddWorkload(netdev.WorkloadSpec{
		NetnsPath:     req.NetnsPath,
		HostIface:     ep.InterfaceName,
		WorkloadIface: req.Interface,
		Addrs:         prefixes,
		MTU:           mtu,
		Routes:        req.Routes,
	})
	if err != nil {
		return fail(fmt.Errorf("container %q: wiring its interface: %w", req.Name, err))
	}
	undo = append(undo, func() { netdev.RemoveWorkload(ep.InterfaceName) })
	ep.MAC = mac
	if err := c.DS.Create(ctx, datastore.EndpointKey(req.Node, req.Name), ep); err != nil {
		if errors.Is(err, datastore.ErrConflict) {
			err = fmt.Errorf("container %q was added concurrently on host %s", req.Name, req.Node)
		}
		return fail(err)
	}
	return ep, nil
}

// WorkloadMTU is the MTU a workload with these addresses gets.
func (c *Client) WorkloadMTU(ctx context.Context, addrs []netip.Addr) (int, error) {
	return c.workloadMTU(ctx, addrs)
}

// workloadMTU leaves room for the VXLAN or IPIP header when any address's pool tunnels.
func (c *Client) workloadMTU(ctx context.Context, addrs []netip.Addr) (int, error) {
	if mtu, on, err := c.encryptionMTU(ctx); err != nil || on {
		return mtu, err
	}
	pools, err := c.Pools(ctx, 0)
	if err != nil {
		return 0, err
	}
	for _, p := range pools {
		cidr, err := netip.ParsePrefix(p.CIDR)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if cidr.Contains(a) && p.VXLANMode != "" && p.VXLANMode != api.EncapNever {
				return 1450, nil
			}
			if cidr.Contains(a) && p.IPIPMode != "" && p.IPIPMode != api.EncapNever {
				return 1480, nil // calc.IPIPMTU
			}
		}
	}
	return 1500, nil
}

// RemoveWorkload deletes the endpoint record first (so the agent stops
// routing to it), then the interface, then releases the addresses.
func (c *Client) RemoveWorkload(ctx context.Context, node, name string) error {
	ep, rev, err := c.Endpoint(ctx, node, name)
	if err != nil {
		return err
	}
	if err := c.DS.DeleteKey(ctx, datastore.EndpointKey(node, name), rev); err != nil {
		if errors.Is(err, datastore.ErrConflict) {
			return fmt.Errorf("container %q changed while removing it; try again", name)
		}
		return err
	}
	if err := netdev.RemoveWorkload(ep.InterfaceName); err != nil {
		return fmt.Errorf("container %q: endpoint removed but its interface %s remains: %w", name, ep.InterfaceName, err)
	}
	_, err = c.IPAM.ReleaseHandle(ctx, handleID(node, name))
	return err
}

// AddWorkloadIP gives a running workload one more address.
func (c *Client) AddWorkloadIP(ctx context.Context, node, name, ip string) error {
	ep, _, err := c.Endpoint(ctx, node, name)
	if err != nil {
		return err
	}
	a, err := api.ParseWorkloadIP(ip)
	if err != nil {
		return err
	}
	if err := c.IPAM.Assign(ctx, a, handleID(node, name), node); err != nil {
		return err
	}
	p := netip.PrefixFrom(a, a.BitLen())
	spec := netdev.WorkloadSpec{NetnsPath: ep.NetnsPath, HostIface: ep.InterfaceName, WorkloadIface: ep.WorkloadIface}
	if err := netdev.WorkloadAddAddr(spec, p); err != nil {
		c.IPAM.Release(context.WithoutCancel(ctx), a)
		return fmt.Errorf("container %q: adding %s: %w", name, a, err)
	}
	err = datastore.Update(ctx, c.DS, datastore.EndpointKey(node, name), func(e *api.Endpoint) error {
		if a.Is4() {
			e.IPv4Nets = append(e.IPv4Nets, p.String())
		} else {
			e.IPv6Nets = append(e.IPv6Nets, p.String())
		}
		return nil
	})
	if err != nil {
		netdev.WorkloadDelAddr(spec, p)
		c.IPAM.Release(context.WithoutCancel(ctx), a)
	}
	return err
}

// RemoveWorkloadIP takes an address away from a workload.
func (c *Client) RemoveWorkloadIP(ctx context.Context, node, name, ip string) error {
	ep, _, err := c.Endpoint(ctx, node, name)
	if err != nil {
		return err
	}
	a, err := api.ParseWorkloadIP(ip)
	if err != nil {
		return err
	}
	p := netip.PrefixFrom(a, a.BitLen())
	if !slices.Contains(ep.IPv4Nets, p.String()) && !slices.Contains(ep.IPv6Nets, p.String()) {
		return fmt.Errorf("container %q does not have address %s", name, a)
	}
	err = datastore.Update(ctx, c.DS, datastore.EndpointKey(node, name), func(e *api.Endpoint) error {
		e.IPv4Nets = slices.DeleteFunc(e.IPv4Nets, func(s string) bool { return s == p.String() })
		e.IPv6Nets = slices.DeleteFunc(e.IPv6Nets, func(s string) bool { return s == p.String() })
		return nil
	})
	if err != nil {
		return err
	}
	spec := netdev.WorkloadSpec{NetnsPath: ep.NetnsPath, HostIface: ep.InterfaceName, WorkloadIface: ep.WorkloadIface}
	if err := netdev.WorkloadDelAddr(spec, p); err != nil {
		return fmt.Errorf("container %q: removing %s from its interface: %w", name, a, err)
	}
	_, err = c.IPAM.Release(ctx, a)
	return err
}

// ProfileOp is how `container NAME profile` changes the list.
type ProfileOp string

const (
	ProfileAppend ProfileOp = "append"
	ProfileRemove ProfileOp = "remove"
	ProfileSet    ProfileOp = "set"
)

// ChangeProfiles edits the ordered profile list of a workload.
func (c *Client) ChangeProfiles(ctx context.Context, node, name string, op ProfileOp, profiles []string) error {
	if _, _, err := c.Endpoint(ctx, node, name); err != nil {
		return err
	}
	if op != ProfileRemove {
		for _, p := range profiles {
			if _, err := c.Profile(ctx, p); err != nil {
				return err
			}
		}
	}
	return datastore.Update(ctx, c.DS, datastore.EndpointKey(node, name), func(e *api.Endpoint) error {
		switch op {
		case ProfileSet:
			e.Profiles = nil
			for _, p := range profiles {
				if slices.Contains(e.Profiles, p) {
					return fmt.Errorf("profile %q is listed twice", p)
				}
				e.Profiles = append(e.Profiles, p)
			}
		case ProfileAppend:
			for _, p := range profiles {
				if slices.Contains(e.Profiles, p) {
					return fmt.Errorf("container %q already has profile %q", name, p)
				}
				e.Profiles = append(e.Profiles, p)
			}
		case ProfileRemove:
			for _, p := range profiles {
				i := slices.Index(e.Profiles, p)
				if i < 0 {
					return fmt.Errorf("container %q does not have profile %q", name, p)
				}
				e.Profiles = slices.Delete(e.Profiles, i, i+1)
			}
		default:
			return fmt.Errorf("unknown profile operation %q: use append, remove or set", op)
		}
		return nil
	})
}

// checkNetns makes sure path names a network namespace before anything is
// assigned, so a typo fails with a plain message rather than deep in netlink.
func checkNetns(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("workload netns %s: %v", path, err)
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		return fmt.Errorf("workload netns %s is not a network namespace (want /run/netns/NAME or /proc/PID/ns/net)", path)
	}
	return nil
}
