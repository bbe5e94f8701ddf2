package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
)

// WorkloadRequest is `container add` in data.
type WorkloadRequest struct {
	Node         string
	Name         string
	IPs          []string // addresses, or "auto" (IPv4) / "auto6"
	NetnsPath    string
	Interface    string // inside the workload; eth0 by default
	Orchestrator string // netns, docker, libnetwork, cni
	ContainerID  string
	Profiles     []string
	// Pools, when set, are the only pools "auto" takes from (CNI's
	// ipv4_pools and ipv6_pools).
	Pools []string
	// Labels describe the workload (CNI, Docker labels, --label).
	Labels map[string]string
	// ContainerName is the Docker container's name (api.Endpoint).
	ContainerName string
	// Routes, when set, are what the workload routes through us, instead
	// of everything (it keeps its default route on another network).
	Routes []netip.Prefix
	// CreateProfiles creates the profiles that do not exist, with the
	// seed's defaults, as AddProfile(ifMissing) would (CNI's network
	// profile); else a missing one is an error.
	CreateProfiles bool
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
// Order: validate, take addresses, wire the veth, record the endpoint.
//
// It may be killed at any point and rerun with the same request: the
// workload's name alone derives its veth (api.WorkloadIfaceName) and its
// IPAM handle (api.WorkloadHandle), so a rerun recognises what an
// interrupted run left. Without a record, the handle's addresses are taken
// over (a requested address the handle already holds is no conflict, an
// "auto" reuses one the handle holds, any other is released) and a veth
// of the derived name is replaced. With a record equal to the request it
// succeeds, re-wiring the veth if it is missing; a different record is an
// error. A failure before the record exists removes the derived veth and
// everything the handle holds, leaving nothing behind. Runs for one
// workload on one host take turns (lockWorkload).
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
		req.Orchestrator = api.OrchestratorNetns
	}
	if err := checkNetns(req.NetnsPath); err != nil {
		return ep, fmt.Errorf("container %q: %v", req.Name, err)
	}
	if err := validateRefs(req.Node, req.Profiles); err != nil {
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
		if slices.Contains(fixed, a) {
			return ep, fmt.Errorf("container %q: address %s is given twice", req.Name, a)
		}
		fixed = append(fixed, a)
	}
	mark(ctx, PhaseChecks)
	unlock, err := lockWorkload(ctx, req.Node, req.Name)
	if err != nil {
		return ep, err
	}
	defer unlock()
	mark(ctx, PhaseLock)

	// Everything the call reads, in one round trip: the node and the
	// profiles, the record and the handle, and the pools and the encryption
	// setting that decide the veth's MTU. They were four round trips, each
	// a few milliseconds when a burst of adds loads etcd.
	key := datastore.EndpointKey(req.Node, req.Name)
	handle := api.WorkloadHandle(req.Node, req.Name)
	reads := refReads(req.Node, req.Profiles)
	nrefs := len(reads)
	reads = append(reads, datastore.ReadKey(key), datastore.ReadKey(datastore.HandleKey(handle)),
		datastore.ReadPrefix(datastore.PrefixPools), datastore.ReadKey(datastore.KeyEncryption))
	all, _, err := c.DS.Read(ctx, reads...)
	if err != nil {
		return ep, err
	}
	if err := c.checkRefRecs(ctx, req.Node, req.Profiles, req.CreateProfiles, all[:nrefs]); err != nil {
		return ep, err
	}
	recs := all[nrefs:]
	pools, enc := recs[2], recs[3]
	if len(recs[0]) > 0 {
		var old api.Endpoint
		if err := json.Unmarshal(recs[0][0].Value, &old); err != nil {
			return ep, fmt.Errorf("datastore record %s is not valid: %w", key, err)
		}
		if !sameWorkload(old, req, fixed) {
			return ep, fmt.Errorf("container %q already has an endpoint on host %s; remove it first with `calicoctl container remove %s`", req.Name, req.Node, req.Name)
		}
		return c.rewire(ctx, old, recs[0][0].Rev, req.Routes)
	}

	// No record: the handle and the derived veth hold at most what an
	// interrupted run left, and are ours to reuse or remove.
	iface := api.WorkloadIfaceName(req.Node, req.Name)
	fail := func(err error) (api.Endpoint, error) {
		if lerr := c.removeLeftovers(context.WithoutCancel(ctx), req.Node, req.Name, nil); lerr != nil {
			// One line: the cause first. An undo that met the same silent
			// datastore adds nothing the caller's hint does not say.
			if !(errors.Is(err, datastore.ErrUnreachable) && errors.Is(lerr, datastore.ErrUnreachable)) {
				err = fmt.Errorf("%w; undo: %v", err, lerr)
			}
		}
		return api.Endpoint{}, err
	}
	held, err := c.heldIn(ctx, handle, recs[1])
	if err != nil {
		return ep, err
	}
	mark(ctx, PhaseRead)
	// The veth pair needs the MTU the addresses' pools decide, not the
	// addresses: it is made while IPAM takes them (datastore round trips,
	// the longer wait in a burst), and only the addresses and routes wait
	// for IPAM. The MTU is the one the pools the call may take from give;
	// if IPAM's addresses say otherwise, the pair is made again.
	early := c.prepareEarly(req, iface, fixed, pools, enc)
	failEarly := func(err error) (api.Endpoint, error) {
		early.abort()
		return fail(err)
	}
	adopted := 0
	take := func(a netip.Addr) bool {
		if i := slices.Index(held, a); i >= 0 {
			held = slices.Delete(held, i, i+1)
			adopted++
			return true
		}
		return false
	}
	var addrs []netip.Addr
	for _, s := range req.IPs {
		var a netip.Addr
		var err error
		switch s {
		case "auto", "auto6":
			// Reuse an address of that family the handle holds and no
			// fixed address of the request names.
			if i := slices.IndexFunc(held, func(h netip.Addr) bool { return h.Is4() == (s == "auto") && !slices.Contains(fixed, h) }); i >= 0 {
				a = held[i]
				take(a)
				break
			}
			family := 4
			if s == "auto6" {
				family = 6
			}
			a, err = c.IPAM.AutoAssign(ctx, handle, req.Node, family, req.Pools)
		default:
			a = fixed[0]
			fixed = fixed[1:]
			if !take(a) {
				err = c.assign(ctx, a, handle, req.Node)
			}
		}
		if err != nil {
			return failEarly(err)
		}
		addrs = append(addrs, a)
	}
	for _, a := range held { // taken by an interrupted run, not asked for now
		if err := c.IPAM.ReleaseFrom(ctx, a, handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) && !errors.Is(err, ipam.ErrNotHolder) {
			return failEarly(err)
		}
	}
	faultPoint("after-address")
	mark(ctx, PhaseIPAM)

	ep = NewEndpoint(EndpointSpec{
		Node: req.Node, Name: req.Name, Orchestrator: req.Orchestrator, ContainerID: req.ContainerID,
		NetnsPath: req.NetnsPath, Interface: req.Interface, Addrs: addrs, Profiles: req.Profiles,
		Labels: req.Labels, ContainerName: req.ContainerName,
	})
	mtu, err := mtuFrom(pools, enc, addrs)
	if err != nil {
		return failEarly(err)
	}
	hs := netdev.HostSide{Name: ep.InterfaceName, MTU: mtu, IPv6: len(ep.IPv6Nets) > 0}
	prepared, err := early.wait(hs)
	if err != nil {
		return fail(fmt.Errorf("container %q: wiring its interface: %w", req.Name, err))
	}
	if prepared != nil {
		ep.MAC, err = finishWire(ep, prepared)
	} else {
		// A veth of the derived name without a record is an interrupted run's.
		if err := netdev.RemoveWorkload(iface); err != nil {
			return fail(fmt.Errorf("container %q: wiring its interface: %w", req.Name, err))
		}
		ep.MAC, err = wireWith(ep, hs, req.Routes)
	}
	if err != nil {
		return fail(err)
	}
	faultPoint("after-veth")
	mark(ctx, PhaseVeth)
	if err := c.DS.Create(ctx, key, ep); err != nil {
		if errors.Is(err, datastore.ErrConflict) {
			// Someone wrote the record meanwhile, without our lock: it owns
			// this veth and handle now, so nothing is undone.
			return api.Endpoint{}, fmt.Errorf("container %q was added concurrently on host %s", req.Name, req.Node)
		}
		return fail(err)
	}
	faultPoint("after-record")
	mark(ctx, PhaseRecord)
	if adopted > 0 {
		// The agent's sweeper may have released the leftover handle just
		// before the record appeared: make sure it still holds every address.
		if err := c.confirmHeld(ctx, ep, handle, addrs); err != nil {
			_ = c.DS.DeleteKey(context.WithoutCancel(ctx), key, 0)
			return fail(err)
		}
	}
	return ep, nil
}

// validateRefs checks the names refReads reads.
func validateRefs(node string, profiles []string) error {
	if err := api.ValidateName("node", node); err != nil {
		return err
	}
	for _, p := range profiles {
		if err := api.ValidateName("profile", p); err != nil {
			return err
		}
	}
	return nil
}

// refReads read the node's record, then each profile's.
func refReads(node string, profiles []string) []datastore.Read {
	reads := []datastore.Read{datastore.ReadKey(datastore.NodeKey(node))}
	for _, p := range profiles {
		reads = append(reads, datastore.ReadKey(datastore.ProfileKey(p)))
	}
	return reads
}

// checkRefRecs makes sure the node and the profiles exist, as Node and
// Profile would, from refReads' records; with create, it makes the missing
// profiles, as AddProfile(ifMissing) would.
func (c *Client) checkRefRecs(ctx context.Context, node string, profiles []string, create bool, recs [][]datastore.Record) error {
	if len(recs[0]) == 0 {
		return missing(unknownNode(node))
	}
	for i, r := range recs {
		if len(r) == 0 {
			if create {
				if err := c.AddProfile(ctx, profiles[i-1], true); err != nil {
					return err
				}
				continue
			}
			return missing(unknownProfile(profiles[i-1]).Error())
		}
		var v any = &api.Profile{}
		if i == 0 {
			v = &api.Node{}
		}
		if err := json.Unmarshal(r[0].Value, v); err != nil {
			return fmt.Errorf("datastore record %s is not valid: %w", r[0].Key, err)
		}
	}
	return nil
}

// mtuFrom is workloadMTU with the pools (every record under
// datastore.PrefixPools; undecodable ones skipped, as Pools does) and the
// encryption setting (none: off) already read.
func mtuFrom(pools, enc []datastore.Record, addrs []netip.Addr) (int, error) {
	var ps []api.Pool
	for _, r := range pools {
		var p api.Pool
		if json.Unmarshal(r.Value, &p) == nil {
			ps = append(ps, p)
		}
	}
	var cfg api.EncryptionConfig
	if len(enc) > 0 {
		if err := json.Unmarshal(enc[0].Value, &cfg); err != nil {
			return 0, fmt.Errorf("datastore record %s is not valid: %w", enc[0].Key, err)
		}
	}
	return calc.WorkloadMTU(ps, cfg.Enabled, addrs), nil
}

// wire makes the workload's veth pair for ep inside its namespace: the
// host side as every workload's (netdev.HostSide, with the MTU of its
// pools), the workload side with its addresses and routes via the gateway
// (all of them, or only routes when given). It returns the workload side's
// MAC.
func (c *Client) wire(ctx context.Context, ep api.Endpoint, routes []netip.Prefix) (string, error) {
	hs, err := c.hostSide(ctx, ep)
	if err != nil {
		return "", err
	}
	return wireWith(ep, hs, routes)
}

// wireWith is wire with the host side's MTU known.
func wireWith(ep api.Endpoint, hs netdev.HostSide, routes []netip.Prefix) (string, error) {
	var prefixes []netip.Prefix
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return "", fmt.Errorf("container %q: bad address %q", ep.Workload, n)
		}
		prefixes = append(prefixes, p)
	}
	mac, err := netdev.AddWorkload(netdev.WorkloadSpec{
		NetnsPath:     ep.NetnsPath,
		HostIface:     hs.Name,
		WorkloadIface: ep.WorkloadIface,
		Addrs:         prefixes,
		MTU:           hs.MTU,
		Group:         calc.ProfileGroup(ep.Profiles),
		Routes:        routes,
	})
	if err != nil {
		return "", fmt.Errorf("container %q: wiring its interface: %w", ep.Workload, err)
	}
	return mac, nil
}

// earlyVeth is a veth pair being made while IPAM runs (prepareEarly);
// its zero value (nil) is none.
type earlyVeth struct {
	hs   netdev.HostSide
	done chan struct{}
	p    *netdev.PreparedWorkload
	err  error
}

// prepareEarly starts making the workload's veth pair for req, with the
// MTU the pools it may take addresses from give (fixed ones included),
// and IPv6 if it asks for any IPv6 address. The calling thread's network
// namespace is the host's (the call may run on a thread locked into a
// lab host), so the goroutine, which may run on another thread, is given
// it by path.
func (c *Client) prepareEarly(req WorkloadRequest, iface string, fixed []netip.Addr, pools, enc []datastore.Record) *earlyVeth {
	candidates := slices.Clone(fixed)
	v6 := slices.ContainsFunc(fixed, netip.Addr.Is6)
	for _, s := range req.IPs {
		if s != "auto" && s != "auto6" {
			continue
		}
		v6 = v6 || s == "auto6"
		for _, r := range pools {
			var p api.Pool
			if json.Unmarshal(r.Value, &p) != nil {
				continue
			}
			cidr, err := netip.ParsePrefix(p.CIDR)
			if err == nil && cidr.Addr().Is4() == (s == "auto") && (len(req.Pools) == 0 || slices.Contains(req.Pools, p.CIDR)) {
				candidates = append(candidates, cidr.Masked().Addr())
			}
		}
	}
	mtu, err := mtuFrom(pools, enc, candidates)
	if err != nil {
		return nil // wired after IPAM, which reports it
	}
	hostNs, err := netns.Get()
	if err != nil {
		return nil
	}
	e := &earlyVeth{hs: netdev.HostSide{Name: iface, MTU: mtu, IPv6: v6}, done: make(chan struct{})}
	spec := netdev.WorkloadSpec{NetnsPath: req.NetnsPath, HostIface: iface, WorkloadIface: req.Interface, MTU: mtu, Routes: req.Routes,
		Group: calc.ProfileGroup(req.Profiles)}
	go func() {
		defer close(e.done)
		defer hostNs.Close()
		in := netdev.InNetns(fmt.Sprintf("/proc/self/fd/%d", int(hostNs)))
		// A veth of the derived name without a record is an interrupted run's.
		if e.err = netdev.RemoveWorkload(iface, in); e.err == nil {
			e.p, e.err = netdev.PrepareWorkload(spec, v6, in)
		}
	}()
	return e
}

// wait is the prepared pair when it is what hs describes; nil (the caller
// wires it now) when there is none or it was prepared for another MTU or
// without IPv6, which it then removes.
func (e *earlyVeth) wait(hs netdev.HostSide) (*netdev.PreparedWorkload, error) {
	if e == nil {
		return nil, nil
	}
	<-e.done
	if e.err != nil {
		return nil, e.err
	}
	if e.hs.MTU != hs.MTU || hs.IPv6 && !e.hs.IPv6 {
		if err := e.p.Abort(); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return e.p, nil
}

// abort waits for the pair and removes it (the call failed).
func (e *earlyVeth) abort() {
	if e == nil {
		return
	}
	<-e.done
	if e.p != nil {
		e.p.Abort()
	}
}

// finishWire gives a prepared pair ep's addresses and routes, as wireWith
// does for a new one.
func finishWire(ep api.Endpoint, p *netdev.PreparedWorkload) (string, error) {
	var prefixes []netip.Prefix
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		pr, err := netip.ParsePrefix(n)
		if err != nil {
			p.Abort()
			return "", fmt.Errorf("container %q: bad address %q", ep.Workload, n)
		}
		prefixes = append(prefixes, pr)
	}
	mac, err := p.Finish(prefixes)
	if err != nil {
		return "", fmt.Errorf("container %q: wiring its interface: %w", ep.Workload, err)
	}
	return mac, nil
}

// rewire finishes a rerun whose record exists: it re-makes the veth if it
// is missing (an interrupted remove, or a lost interface) and records the
// new MAC.
func (c *Client) rewire(ctx context.Context, ep api.Endpoint, rev int64, routes []netip.Prefix) (api.Endpoint, error) {
	var addrs []netip.Addr
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		if p, err := netip.ParsePrefix(n); err == nil {
			addrs = append(addrs, p.Addr())
		}
	}
	// A run that lost the answer to its record's write undid the rest.
	if err := c.confirmHeld(ctx, ep, api.WorkloadHandle(ep.Node, ep.Workload), addrs); err != nil {
		return ep, err
	}
	if netdev.LinkExists(ep.InterfaceName) {
		return ep, nil
	}
	mac, err := c.wire(ctx, ep, routes)
	if err != nil {
		return ep, err
	}
	ep.MAC = mac
	if err := c.DS.CAS(ctx, datastore.EndpointKey(ep.Node, ep.Workload), rev, ep); err != nil {
		if errors.Is(err, datastore.ErrConflict) {
			err = fmt.Errorf("container %q changed while re-wiring it; try again", ep.Workload)
		}
		return ep, err
	}
	return ep, nil
}

// RemoveWorkload deletes the endpoint record first (so the agent stops
// routing to it), then the interface, then releases the addresses, and
// returns notes on anything unusual it met.
//
// Only the interface derived from node and workload is deleted: a record
// naming another interface (another workload's veth) is a lie, and that
// interface is left alone, with a note. It may be killed at any point and
// rerun: without a record, what an interrupted add or remove left (the
// derived veth, the handle's addresses) is removed and the call succeeds;
// with nothing at all it is an "unknown container" error.
func (c *Client) RemoveWorkload(ctx context.Context, node, name string) (notes []string, err error) {
	unlock, err := lockWorkload(ctx, node, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	key := datastore.EndpointKey(node, name)
	ep, rev, err := datastore.Get[api.Endpoint](ctx, c.DS, key)
	if errors.Is(err, datastore.ErrNotFound) {
		var found []string
		if err := c.removeLeftovers(ctx, node, name, &found); err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, notFound(err, "unknown container %q on host %s; list them with `calicoctl endpoint show`", name, node)
		}
		return []string{fmt.Sprintf("container %q had no endpoint; removed what an interrupted add or remove left: %s", name, strings.Join(found, ", "))}, nil
	} else if err != nil {
		return nil, err
	}
	if err := c.DS.DeleteKey(ctx, key, rev); err != nil {
		if errors.Is(err, datastore.ErrConflict) {
			return nil, fmt.Errorf("container %q changed while removing it; try again", name)
		}
		return nil, err
	}
	faultPoint("after-record")
	iface := api.WorkloadIfaceName(node, name)
	if ep.InterfaceName != iface {
		notes = append(notes, fmt.Sprintf("the endpoint of %q named interface %q, which is not its own (%s): left that interface alone", name, ep.InterfaceName, iface))
	}
	if err := netdev.RemoveWorkload(iface); err != nil {
		return notes, fmt.Errorf("container %q: endpoint removed but its interface %s remains: %w", name, iface, err)
	}
	faultPoint("after-veth")
	_, err = c.IPAM.ReleaseHandle(ctx, api.WorkloadHandle(node, name))
	return notes, err
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
	if err := refuseHostNetns(ep.NetnsPath); err != nil {
		return fmt.Errorf("container %q: %v", name, err)
	}
	handle := api.WorkloadHandle(node, name)
	if err := c.IPAM.Assign(ctx, a, handle, node); err != nil {
		return c.TakenBy(ctx, a, err)
	}
	p := netip.PrefixFrom(a, a.BitLen())
	spec := netdev.WorkloadSpec{NetnsPath: ep.NetnsPath, HostIface: ep.InterfaceName, WorkloadIface: ep.WorkloadIface}
	if err := netdev.WorkloadAddAddr(spec, p); err != nil {
		c.IPAM.ReleaseFrom(context.WithoutCancel(ctx), a, handle)
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
		c.IPAM.ReleaseFrom(context.WithoutCancel(ctx), a, handle)
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
	if err := refuseHostNetns(ep.NetnsPath); err != nil {
		return fmt.Errorf("container %q: %v", name, err)
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
	// Only if this workload holds it: a record listing an address IPAM
	// gave to another workload must not free that workload's address.
	err = c.IPAM.ReleaseFrom(ctx, a, api.WorkloadHandle(node, name))
	if errors.Is(err, ipam.ErrNotAssigned) {
		return nil
	} else if errors.Is(err, ipam.ErrNotHolder) {
		return fmt.Errorf("container %q: %s removed from it, but IPAM holds that address for another workload (%v), so it stays assigned; see `calicoctl ipam check`", name, a, err)
	}
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
