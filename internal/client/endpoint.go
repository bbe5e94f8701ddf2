package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// One endpoint lifecycle for every entry point: calicoctl container add and
// the Docker watcher (through AddWorkload), the libnetwork driver's Join
// (through NewEndpoint, WireEngineVeth and RecordEndpoint), and later CNI.
// Each fills an EndpointSpec; NewEndpoint turns it into the record, with the
// interface name derived from node and workload; the veth is made by netdev
// with the host side netdev.HostSide describes and the MTU calc.WorkloadMTU
// gives, which is also what the agent keeps on every pass.

// EndpointSpec is a workload as an entry point knows it: who, where, with
// which addresses and profiles.
type EndpointSpec struct {
	Node         string
	Name         string // the workload's name on its host
	Orchestrator string // api.Orchestrator*: netns, docker, libnetwork
	ContainerID  string
	NetnsPath    string // the workload's namespace, or the engine's sandbox key
	Interface    string // inside the workload: eth0, cali0
	Addrs        []netip.Addr
	Profiles     []string
	// IPAMHandles name the handles holding the addresses when they are not
	// the workload's own (api.WorkloadHandle).
	IPAMHandles []string
	Labels      map[string]string
	// ContainerName and DockerID: the Docker container, as users know it.
	ContainerName, DockerID string
}

// NewEndpoint is the endpoint record of s, without a MAC (the veth gives
// it). Its host-side interface is always api.WorkloadIfaceName: the
// record never chooses it.
func NewEndpoint(s EndpointSpec) api.Endpoint {
	ep := api.Endpoint{
		Node:          s.Node,
		Workload:      s.Name,
		Orchestrator:  s.Orchestrator,
		ContainerID:   s.ContainerID,
		NetnsPath:     s.NetnsPath,
		InterfaceName: api.WorkloadIfaceName(s.Node, s.Name),
		WorkloadIface: s.Interface,
		Profiles:      append([]string{}, s.Profiles...),
		IPAMHandles:   slices.Clone(s.IPAMHandles),
		Labels:        maps.Clone(s.Labels),
		ContainerName: s.ContainerName,
		DockerID:      s.DockerID,
	}
	for _, a := range s.Addrs {
		p := netip.PrefixFrom(a, a.BitLen()).String()
		if a.Is4() {
			ep.IPv4Nets = append(ep.IPv4Nets, p)
		} else {
			ep.IPv6Nets = append(ep.IPv6Nets, p)
		}
	}
	return ep
}

// endpointAddrs are ep's addresses; a malformed one is an error naming it.
func endpointAddrs(ep api.Endpoint) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, fmt.Errorf("container %q: bad address %q", ep.Workload, n)
		}
		out = append(out, p.Addr())
	}
	return out, nil
}

// hostSide is what the host side of ep's veth is made as, and kept as by
// the agent: the derived name, the MTU of its pools and the device group
// of its profile list.
func (c *Client) hostSide(ctx context.Context, ep api.Endpoint) (netdev.HostSide, error) {
	addrs, err := endpointAddrs(ep)
	if err != nil {
		return netdev.HostSide{}, err
	}
	mtu, err := c.workloadMTU(ctx, addrs)
	if err != nil {
		return netdev.HostSide{}, err
	}
	return netdev.HostSide{Name: ep.InterfaceName, MTU: mtu, IPv6: len(ep.IPv6Nets) > 0, Group: calc.ProfileGroup(ep.Profiles)}, nil
}

// WireEngineVeth makes ep's veth for a container engine that configures
// the container's side itself (libnetwork): the host side as every
// workload's, the peer named peer in engineNetns ("" the host's), left for
// the engine. It returns ep with the peer's MAC.
func (c *Client) WireEngineVeth(ctx context.Context, ep api.Endpoint, peer, engineNetns string) (api.Endpoint, error) {
	hs, err := c.hostSide(ctx, ep)
	if err != nil {
		return ep, err
	}
	mac, err := netdev.AddEngineVeth(netdev.EngineVethSpec{HostIface: hs.Name, PeerIface: peer, EngineNetns: engineNetns, MTU: hs.MTU, IPv6: hs.IPv6, Group: hs.Group})
	if err != nil {
		return ep, fmt.Errorf("container %q: wiring its interface: %w", ep.Workload, err)
	}
	ep.MAC = mac
	return ep, nil
}

// AddEngineEndpoint is AddWorkload for a container engine that configures
// the container's side itself (the libnetwork driver's Join): the record
// of spec, refused before anything is made if another workload's record
// holds the name; the veth (WireEngineVeth, peer left in engineNetns for
// the engine); then the record (RecordEndpoint: a retry of the same
// endpoint replaces its own record, nothing else is overwritten). Runs for
// one workload take turns with container add and remove (lockWorkload). A
// failure after the veth was made removes it. The addresses are the
// caller's to hold in IPAM (spec.IPAMHandles).
func (c *Client) AddEngineEndpoint(ctx context.Context, spec EndpointSpec, peer, engineNetns string) (api.Endpoint, error) {
	ep := NewEndpoint(spec)
	if err := api.ValidateName("container", ep.Workload); err != nil {
		return ep, err
	}
	unlock, err := lockWorkload(ctx, ep.Node, ep.Workload)
	if err != nil {
		return ep, err
	}
	defer unlock()
	// Another workload's record under this name owns the derived veth too:
	// refuse before AddEngineVeth would replace it.
	if err := c.CheckEndpointFree(ctx, ep); err != nil {
		return ep, err
	}
	if ep, err = c.WireEngineVeth(ctx, ep, peer, engineNetns); err != nil {
		return ep, err
	}
	if err := c.RecordEndpoint(ctx, ep); err != nil {
		if rerr := netdev.RemoveWorkload(ep.InterfaceName); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", rerr))
		}
		return ep, err
	}
	return ep, nil
}

// ErrEndpointTaken: an endpoint record of that name belongs to another workload.
var ErrEndpointTaken = errors.New("endpoint name taken")

// CheckEndpointFree makes sure no other workload's record holds ep's name
// (a record of the same workload, a retry's, is no obstacle). Entry points
// call it before making the veth, whose derived name the other workload's
// veth has too.
func (c *Client) CheckEndpointFree(ctx context.Context, ep api.Endpoint) error {
	old, _, err := datastore.Get[api.Endpoint](ctx, c.DS, datastore.EndpointKey(ep.Node, ep.Workload))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if !sameWorkloadAs(old, ep) {
		return takenError(old)
	}
	return nil
}

func takenError(old api.Endpoint) error {
	return fmt.Errorf("%w: container %q on host %s already has an endpoint (orchestrator %s, container id %.12s); remove it first with `calicoctl container remove %s`",
		ErrEndpointTaken, old.Workload, old.Node, old.Orchestrator, old.ContainerID, old.Workload)
}

// RecordEndpoint writes ep's record: created when there is none, replaced
// (compare-and-swap) when the record is of the same workload (an engine's
// retry, see sameWorkloadAs), and never overwritten when it is another's:
// that is an ErrEndpointTaken error naming the other workload.
func (c *Client) RecordEndpoint(ctx context.Context, ep api.Endpoint) error {
	key := datastore.EndpointKey(ep.Node, ep.Workload)
	for range 3 {
		err := c.DS.Create(ctx, key, ep)
		if !errors.Is(err, datastore.ErrConflict) {
			return err
		}
		old, rev, err := datastore.Get[api.Endpoint](ctx, c.DS, key)
		if errors.Is(err, datastore.ErrNotFound) {
			continue // removed meanwhile: create again
		} else if err != nil {
			return err
		}
		if !sameWorkloadAs(old, ep) {
			return takenError(old)
		}
		if err := c.DS.CAS(ctx, key, rev, ep); !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("container %q on host %s: its endpoint record kept changing while it was written; try again", ep.Workload, ep.Node)
}

// sameWorkloadAs says whether the record old is of the workload ep
// describes: the same container of the same orchestrator (what the
// libnetwork driver's unwire also goes by), or, without a container id,
// the same record but for the MAC (a re-made veth has a new one).
func sameWorkloadAs(old, ep api.Endpoint) bool {
	if old.Node != ep.Node || old.Workload != ep.Workload || old.InterfaceName != ep.InterfaceName {
		return false
	}
	if ep.ContainerID != "" {
		return old.Orchestrator == ep.Orchestrator && old.ContainerID == ep.ContainerID
	}
	return sameEndpoint(old, ep)
}

// sameEndpoint says whether a and b are equal but for the MAC.
func sameEndpoint(a, b api.Endpoint) bool {
	a.MAC, b.MAC = "", ""
	eq := func(x, y []string) bool { return slices.Equal(x, y) || len(x)+len(y) == 0 }
	return a.Node == b.Node && a.Workload == b.Workload && a.Orchestrator == b.Orchestrator &&
		a.ContainerID == b.ContainerID && a.NetnsPath == b.NetnsPath && a.InterfaceName == b.InterfaceName &&
		a.WorkloadIface == b.WorkloadIface && eq(a.IPv4Nets, b.IPv4Nets) && eq(a.IPv6Nets, b.IPv6Nets) &&
		eq(a.Profiles, b.Profiles) && eq(a.IPAMHandles, b.IPAMHandles) && maps.Equal(a.Labels, b.Labels)
}

// workloadMTU is the MTU a workload with these addresses gets: calc's
// answer over the stored pools, the one the agent keeps.
func (c *Client) workloadMTU(ctx context.Context, addrs []netip.Addr) (int, error) {
	pools, err := c.Pools(ctx, 0)
	if err != nil {
		return 0, err
	}
	enc, err := c.Encryption(ctx)
	if err != nil {
		return 0, err
	}
	return calc.WorkloadMTU(pools, enc.Enabled, addrs), nil
}
