package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
	ipamstore "github.com/calico-go/calico/internal/ipam"
)

var (
	gatewayV4 = netdev.GatewayIPv4.String()
	gatewayV6 = netdev.GatewayIPv6.String()
)

// genericOptions is where the engine puts `docker network create --opt`.
const genericOptions = "com.docker.network.generic"

// NetworkDriver is the engine's view of our network.
type NetworkDriver struct{ d *Drivers }

var _ network.Driver = NetworkDriver{}

func (NetworkDriver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	// Local scope: the engine has no cluster store to share networks
	// through; ConnectivityScope global: containers reach across hosts.
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.GlobalScope}, nil
}

// poolOptions reads `--opt ipip=true|nat-outgoing=true|vxlan=true`.
// explicit tells whether the user gave any, so a network on a second host
// created without them accepts the pool the first host made.
func poolOptions(opts map[string]any) (o client.PoolOptions, explicit bool, err error) {
	generic, _ := opts[genericOptions].(map[string]any)
	keys := make([]string, 0, len(generic))
	for k := range generic {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s := fmt.Sprint(generic[k])
		var on bool
		switch strings.ToLower(s) {
		case "true", "1", "yes":
			on = true
		case "false", "0", "no":
		default:
			return o, false, fmt.Errorf("--opt %s=%s: want true or false", k, s)
		}
		explicit = true
		switch k {
		case "ipip":
			if on {
				o.IPIPMode = api.EncapAlways
			}
		case "vxlan":
			if on {
				o.VXLANMode = api.EncapAlways
			}
		case "nat-outgoing":
			o.NATOutgoing = on
		default:
			return o, false, fmt.Errorf("unknown --opt %q; calico networks take ipip, vxlan and nat-outgoing", k)
		}
	}
	if o.IPIPMode == api.EncapAlways && o.VXLANMode == api.EncapAlways {
		return o, false, errors.New("--opt ipip=true and vxlan=true: choose one encapsulation")
	}
	return o, explicit, nil
}

// CreateNetwork makes sure each subnet is a pool with the network's options
// and records the network for this host. A subnet that is already a pool
// (the same network created on another host first) is taken as it is,
// unless the options say otherwise.
func (n NetworkDriver) CreateNetwork(r *network.CreateNetworkRequest) error {
	d := n.d
	ctx, done := d.call()
	defer done()
	opts, explicit, err := poolOptions(r.Options)
	if err != nil {
		return err
	}
	key := networkKey(d.node, r.NetworkID)
	if _, _, err := d.c.DS.GetRaw(ctx, key); err == nil {
		return nil // the engine retried
	}
	rec := networkRecord{ID: r.NetworkID, OurIPAM: true}
	for _, data := range append(append([]*network.IPAMData{}, r.IPv4Data...), r.IPv6Data...) {
		if data.AddressSpace != AddressSpace {
			rec.OurIPAM = false
		}
		if data.Pool == "0.0.0.0/0" || data.Pool == "::/0" {
			continue // calico-ipam without --subnet: any pool of the family
		}
		cidr, err := api.ValidatePoolCIDR(data.Pool)
		if err != nil {
			return err
		}
		rec.Pools = append(rec.Pools, cidr.String())
	}
	if !rec.OurIPAM && len(rec.Pools) == 0 {
		return errors.New("a calico network needs --subnet, or --ipam-driver=calico-ipam to take addresses from the pools")
	}
	pools, err := d.c.Pools(ctx, 0)
	if err != nil {
		return err
	}
	undo := func() {
		for _, cidr := range rec.CreatedPools {
			_ = d.c.RemovePool(context.WithoutCancel(ctx), cidr, false)
		}
	}
	for _, cidr := range rec.Pools {
		i := slices.IndexFunc(pools, func(p api.Pool) bool { return p.CIDR == cidr })
		if i >= 0 {
			p := pools[i]
			if explicit && (p.IPIPMode != opts.IPIPMode.OrNever() || p.VXLANMode != opts.VXLANMode.OrNever() || p.NATOutgoing != opts.NATOutgoing) {
				undo()
				return fmt.Errorf("pool %s exists with ipip=%s vxlan=%s nat-outgoing=%t; give the same --opt values, or change the pool with `calicoctl pool add`", cidr, p.IPIPMode, p.VXLANMode, p.NATOutgoing)
			}
			continue
		}
		if _, err := d.c.AddPools(ctx, []string{cidr}, opts); err != nil {
			undo()
			return err
		}
		rec.CreatedPools = append(rec.CreatedPools, cidr)
	}
	if err := d.c.DS.Create(ctx, key, rec); err != nil {
		undo()
		if errors.Is(err, datastore.ErrConflict) {
			return fmt.Errorf("network %s was recorded on host %s while being created (a concurrent call); try again", short(r.NetworkID), d.node)
		}
		return err
	}
	d.log.Info("created network", "network", short(r.NetworkID), "pools", rec.Pools, "created", rec.CreatedPools)
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// DeleteNetwork forgets this host's network. What the network created (its
// pools, its profile) goes only with the last host's network of that name
// and only when nothing uses it; otherwise another host's record inherits
// the duty to remove it.
func (n NetworkDriver) DeleteNetwork(r *network.DeleteNetworkRequest) error {
	d := n.d
	ctx, done := d.call()
	defer done()
	key := networkKey(d.node, r.NetworkID)
	rec, _, err := datastore.Get[networkRecord](ctx, d.c.DS, key)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	d.log.Info("deleting network", "network", short(r.NetworkID), "name", rec.Name, "pools", rec.Pools, "created", rec.CreatedPools, "createdProfile", rec.CreatedProfile)
	all, err := datastore.List[networkRecord](ctx, d.c.DS, networkPrefix())
	if err != nil {
		return err
	}
	var others []datastore.KV[networkRecord]
	for _, kv := range all {
		if kv.Key != key {
			others = append(others, kv)
		}
	}
	if err := d.c.DS.DeleteKey(ctx, key, 0); err != nil {
		return err
	}
	var stays []string      // pools other workloads still use
	heirs := map[int]bool{} // others that inherit a duty, written once at the end
	defer func() {
		for i := range heirs {
			// Only if the heir is unchanged since we read it: a host that
			// removed its network meanwhile must not get it back.
			if err := d.c.DS.CAS(ctx, others[i].Key, others[i].Rev, others[i].Value); err != nil {
				d.log.Warn("cannot hand the network's pool or profile to another host's network; it may stay after the last docker network rm", "heir", others[i].Key, "err", err)
			}
		}
	}()
	for _, cidr := range rec.CreatedPools {
		if heir := slices.IndexFunc(others, func(o datastore.KV[networkRecord]) bool { return slices.Contains(o.Value.Pools, cidr) }); heir >= 0 {
			others[heir].Value.CreatedPools = append(others[heir].Value.CreatedPools, cidr)
			heirs[heir] = true
			d.log.Info("another host's network still uses the pool; it stays", "pool", cidr, "heir", others[heir].Key)
			continue
		}
		if err := d.c.RemovePool(ctx, cidr, false); err != nil {
			d.log.Warn("network removed; its pool stays", "pool", cidr, "err", err)
			if errors.Is(err, ipamstore.ErrInUse) {
				// The name is learnt at the first endpoint; before, the id.
				name := rec.Name
				if name == "" {
					name = short(r.NetworkID)
				}
				stays = append(stays, d.keepPending(ctx, name, cidr))
			}
		} else {
			d.log.Info("removed pool of network", "pool", cidr)
		}
	}
	if rec.CreatedProfile && rec.Name != "" {
		if heir := slices.IndexFunc(others, func(o datastore.KV[networkRecord]) bool { return o.Value.Name == rec.Name }); heir >= 0 {
			others[heir].Value.CreatedProfile = true
			heirs[heir] = true
		} else if err := d.removeProfileIfUnused(ctx, rec.Name); err != nil {
			d.log.Warn("network removed; its profile stays", "profile", rec.Name, "err", err)
		}
	}
	d.log.Info("deleted network", "network", short(r.NetworkID))
	if len(stays) > 0 {
		// The engine removes the network whatever a remote driver answers
		// (it honours only its own Forbidden errors) and logs the error:
		// the engine's log says it, and `calicoctl status` until it is done.
		return fmt.Errorf("network removed, but %s; each goes when its last user does", strings.Join(stays, "; "))
	}
	return nil
}

// poolUsers names the workloads with an address in one of the pools.
func (d *Drivers) poolUsers(ctx context.Context, cidrs []string) ([]string, error) {
	if len(cidrs) == 0 {
		return nil, nil
	}
	var pools []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			pools = append(pools, p.Masked())
		}
	}
	eps, err := d.c.Endpoints(ctx, "")
	if err != nil {
		return nil, err
	}
	var users []string
	for _, ep := range eps {
		for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
			a, err := netip.ParsePrefix(n)
			if err == nil && slices.ContainsFunc(pools, func(p netip.Prefix) bool { return p.Contains(a.Addr()) }) {
				users = append(users, client.DescribeEndpoint(ep))
				break
			}
		}
	}
	return users, nil
}

func (d *Drivers) removeProfileIfUnused(ctx context.Context, name string) error {
	eps, err := d.c.Endpoints(ctx, "")
	if err != nil {
		return err
	}
	for _, ep := range eps {
		if slices.Contains(ep.Profiles, name) {
			return fmt.Errorf("endpoint %s/%s still uses it", ep.Node, ep.Workload)
		}
	}
	return d.c.RemoveProfile(ctx, name, false)
}

func (NetworkDriver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return nil, errors.New("calico networks are local-scope; swarm networks are not supported")
}

func (NetworkDriver) FreeNetwork(*network.FreeNetworkRequest) error { return nil }

// CreateEndpoint names the endpoint's profile after its network and, when
// the engine's own IPAM chose the addresses, claims them in ours so nothing
// else is given them.
func (n NetworkDriver) CreateEndpoint(r *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	d := n.d
	ctx, done := d.call()
	defer done()
	ekey := endpointKey(d.node, r.EndpointID)
	if _, _, err := d.c.DS.GetRaw(ctx, ekey); err == nil {
		return &network.CreateEndpointResponse{}, nil // the engine retried
	}
	// Check everything the engine sent before changing anything.
	if r.Interface == nil || r.Interface.Address == "" && r.Interface.AddressIPv6 == "" {
		return nil, errors.New("the engine gave the endpoint no address; calico endpoints need one")
	}
	var addrs []netip.Addr
	for _, s := range []string{r.Interface.Address, r.Interface.AddressIPv6} {
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("endpoint address %q: %v", s, err)
		}
		addrs = append(addrs, p.Addr())
	}
	nkey := networkKey(d.node, r.NetworkID)
	rec, nrev, err := datastore.Get[networkRecord](ctx, d.c.DS, nkey)
	if err != nil {
		return nil, fmt.Errorf("network %s is unknown to calico on host %s (was it created while calico-node ran with --libnetwork?): %v", short(r.NetworkID), d.node, err)
	}
	if rec.Name == "" {
		nw, err := d.engine.NetworkInspect(ctx, r.NetworkID)
		if err != nil {
			return nil, fmt.Errorf("network %s: cannot learn its name: %v", short(r.NetworkID), err)
		}
		if err := api.ValidateName("profile", nw.Name); err != nil {
			return nil, fmt.Errorf("network %q: its name cannot be a profile name: %v", nw.Name, err)
		}
		_, _, perr := d.c.DS.GetRaw(ctx, datastore.ProfileKey(nw.Name))
		if errors.Is(perr, datastore.ErrNotFound) {
			if err := d.c.AddProfile(ctx, nw.Name, true); err != nil {
				return nil, err
			}
			rec.CreatedProfile = true
			d.log.Info("created profile for network", "profile", nw.Name)
		} else if perr != nil {
			return nil, perr
		}
		rec.Name = nw.Name
		if err := d.c.DS.CAS(ctx, nkey, nrev, rec); err != nil {
			if rec.CreatedProfile { // not recorded as ours: the retry makes it again
				_ = d.c.RemoveProfile(context.WithoutCancel(ctx), nw.Name, false)
			}
			if errors.Is(err, datastore.ErrConflict) {
				err = fmt.Errorf("network %s changed while its first endpoint was made (a concurrent call); try again", short(r.NetworkID))
			}
			return nil, err
		}
	}
	erec := endpointRecord{ID: r.EndpointID, NetworkID: r.NetworkID, Profile: rec.Name}
	for _, a := range addrs {
		if !rec.OurIPAM {
			if err := d.c.IPAM.Assign(ctx, a, api.LibnetworkHandle(d.node), d.node); err != nil {
				err = d.c.TakenBy(ctx, a, err)
				d.release(ctx, erec.Claimed)
				if errors.Is(err, ipamstore.ErrAlreadyAssigned) {
					err = fmt.Errorf("%v: the engine's default IPAM chooses addresses on each host alone; give networks used on several hosts --ipam-driver=calico-ipam", err)
				}
				return nil, err
			}
			erec.Claimed = append(erec.Claimed, a.String())
		}
		erec.Addrs = append(erec.Addrs, netip.PrefixFrom(a, a.BitLen()).String())
	}
	if err := d.c.DS.Create(ctx, ekey, erec); err != nil {
		d.release(ctx, erec.Claimed)
		if errors.Is(err, datastore.ErrConflict) {
			err = fmt.Errorf("endpoint %s was recorded while being created (a concurrent call); try again", short(r.EndpointID))
		}
		return nil, err
	}
	return &network.CreateEndpointResponse{}, nil
}

func (d *Drivers) release(ctx context.Context, addrs []string) {
	for _, s := range addrs {
		if a, err := netip.ParseAddr(s); err == nil {
			if err := d.c.IPAM.ReleaseFrom(context.WithoutCancel(ctx), a, api.LibnetworkHandle(d.node)); err != nil && !isNotAssigned(err) {
				d.log.Warn("release address", "addr", a, "err", err)
			}
		}
	}
}

// DeleteEndpoint gives back what CreateEndpoint took. Unknown endpoints
// succeed: the engine retries, and calls may arrive twice.
func (n NetworkDriver) DeleteEndpoint(r *network.DeleteEndpointRequest) error {
	d := n.d
	ctx, done := d.call()
	defer done()
	if err := d.unwire(ctx, r.EndpointID); err != nil {
		return err
	}
	ekey := endpointKey(d.node, r.EndpointID)
	erec, _, err := datastore.Get[endpointRecord](ctx, d.c.DS, ekey)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	d.release(ctx, erec.Claimed)
	return d.c.DS.DeleteKey(ctx, ekey, 0)
}

func (NetworkDriver) EndpointInfo(*network.InfoRequest) (*network.InfoResponse, error) {
	return &network.InfoResponse{Value: map[string]string{}}, nil
}

// Join makes the veth pair, records the endpoint (from then on the agent
// routes to it and applies its profile), and tells the engine how to set
// up the container's side: the same gateway as every workload has.
func (n NetworkDriver) Join(r *network.JoinRequest) (*network.JoinResponse, error) {
	d := n.d
	ctx, done := d.call()
	defer done()
	erec, _, err := datastore.Get[endpointRecord](ctx, d.c.DS, endpointKey(d.node, r.EndpointID))
	if err != nil {
		return nil, fmt.Errorf("endpoint %s is unknown to calico on host %s: %v", short(r.EndpointID), d.node, err)
	}
	spec := client.EndpointSpec{
		Node:         d.node,
		Name:         Workload(r.EndpointID),
		Orchestrator: api.OrchestratorLibnetwork,
		ContainerID:  r.EndpointID,
		NetnsPath:    r.SandboxKey,
		Interface:    containerIfacePrefix + "0",
		Profiles:     []string{erec.Profile},
		IPAMHandles:  []string{api.LibnetworkHandle(d.node)},
	}
	for _, s := range erec.Addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: bad recorded address %q", short(r.EndpointID), s)
		}
		spec.Addrs = append(spec.Addrs, p.Addr())
	}
	engineNs, err := d.engineNetns()
	if err != nil {
		return nil, err
	}
	peer := "tmp" + strings.TrimPrefix(api.WorkloadIfaceName(spec.Node, spec.Name), "cali")
	ep, err := d.c.AddEngineEndpoint(ctx, spec, peer, engineNs)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", short(r.EndpointID), err)
	}
	others, err := d.sandboxPeers(ctx, r.SandboxKey, spec.Name)
	if err != nil {
		return nil, err
	}
	routes, err := d.poolRoutes(ctx, ep, others)
	if err != nil {
		return nil, err
	}
	// With the engine's own IPAM the container's address carries the
	// subnet's mask, so the kernel routes the subnet on the link already:
	// routing it again is "file exists".
	if nrec, _, err := datastore.Get[networkRecord](ctx, d.c.DS, networkKey(d.node, erec.NetworkID)); err != nil {
		return nil, fmt.Errorf("endpoint %s: its network: %v", short(r.EndpointID), err)
	} else if !nrec.OurIPAM {
		routes = slices.DeleteFunc(routes, func(p netip.Prefix) bool { return slices.Contains(nrec.Pools, p.String()) })
	}
	gw4, gw6 := d.gateways(others)
	resp := joinResponse(peer, ep, gw4, gw6, routes)
	d.learnContainerLater(r.EndpointID, erec.NetworkID)
	d.log.Info("joined endpoint", "endpoint", short(r.EndpointID), "iface", ep.InterfaceName, "addrs", erec.Addrs, "profile", erec.Profile,
		"gateway", resp.Gateway != "" || resp.GatewayIPv6 != "", "routes", len(resp.StaticRoutes))
	return resp, nil
}

// joinResponse tells the engine how to set up the container's side.
//
// A container may be on several calico networks (and on the engine's
// bridge). Every calico interface gets connected routes to its own pools
// (the host side answers ARP for every address it routes elsewhere), so
// each network's peers are reached through that network's interface,
// whichever interface holds the default route. Only one calico interface
// per family gives the gateway and its on-link /32 (see gateways): a second
// identical route in the sandbox is "file exists" to the engine, which then
// fails the connect or the restart. The others turn the engine's gateway
// service off, so it never attaches docker_gwbridge for them.
func joinResponse(peer string, ep api.Endpoint, gw4, gw6 bool, routes []netip.Prefix) *network.JoinResponse {
	resp := &network.JoinResponse{
		InterfaceName: network.InterfaceName{SrcName: peer, DstPrefix: containerIfacePrefix},
	}
	gw4 = gw4 && len(ep.IPv4Nets) > 0
	gw6 = gw6 && len(ep.IPv6Nets) > 0
	if gw4 {
		resp.Gateway = gatewayV4
		// The gateway is on no subnet of the container's: make it
		// reachable on the link first (RouteType 1 = connected).
		resp.StaticRoutes = append(resp.StaticRoutes, &network.StaticRoute{Destination: gatewayV4 + "/32", RouteType: 1})
	}
	if gw6 {
		resp.GatewayIPv6 = gatewayV6
	}
	if !gw4 && !gw6 {
		resp.DisableGatewayService = true
	}
	for _, p := range routes {
		resp.StaticRoutes = append(resp.StaticRoutes, &network.StaticRoute{Destination: p.String(), RouteType: 1})
	}
	return resp
}

// gateways says whether this endpoint gives the container its IPv4 and
// IPv6 gateway: when no other calico interface of the sandbox (the
// container) has an address of that family. So the default route stays
// with the calico network that gave it first; `docker network connect`
// adds routes, never moves it. At a start the engine joins a container's
// networks in no fixed order (Docker 20.10 walks a map), and the
// sandbox's key names the sandbox, not the container, so the driver
// cannot tell which network the container was made on: the first joined
// gives the gateway, and each network's pools stay routed through its own
// interface either way.
func (d *Drivers) gateways(others []api.Endpoint) (v4, v6 bool) {
	hasV4 := func(e api.Endpoint) bool { return len(e.IPv4Nets) > 0 }
	hasV6 := func(e api.Endpoint) bool { return len(e.IPv6Nets) > 0 }
	return !slices.ContainsFunc(others, hasV4), !slices.ContainsFunc(others, hasV6)
}

// sandboxPeers are the other calico endpoints joined to the same sandbox
// (the container's network namespace), as recorded by earlier Joins. A
// record whose host-side veth is gone is a leftover, not a peer.
func (d *Drivers) sandboxPeers(ctx context.Context, sandboxKey, workload string) ([]api.Endpoint, error) {
	if sandboxKey == "" {
		return nil, nil
	}
	eps, err := d.c.Endpoints(ctx, d.node)
	if err != nil {
		return nil, err
	}
	var out []api.Endpoint
	for _, e := range eps {
		if e.Orchestrator == api.OrchestratorLibnetwork && e.NetnsPath == sandboxKey && e.Workload != workload &&
			e.InterfaceName == api.WorkloadIfaceName(d.node, e.Workload) && netdev.LinkExists(e.InterfaceName) {
			out = append(out, e)
		}
	}
	return out, nil
}

// poolRoutes are the IPv4 pools holding ep's addresses, less those another
// interface of the sandbox already routes (two networks on one subnet).
// IPv6 pools are not routed per interface: the host side answers neighbour
// solicitations for the gateway only, so IPv6 goes by the default route.
func (d *Drivers) poolRoutes(ctx context.Context, ep api.Endpoint, others []api.Endpoint) ([]netip.Prefix, error) {
	pools, err := d.c.Pools(ctx, 4)
	if err != nil {
		return nil, err
	}
	holding := func(e api.Endpoint) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range e.IPv4Nets {
			a, err := netip.ParsePrefix(s)
			if err != nil {
				continue
			}
			for _, p := range pools {
				cidr, err := netip.ParsePrefix(p.CIDR)
				if err == nil && cidr.Contains(a.Addr()) && !slices.Contains(out, cidr) {
					out = append(out, cidr)
				}
			}
		}
		return out
	}
	taken := map[netip.Prefix]bool{}
	for _, o := range others {
		for _, p := range holding(o) {
			taken[p] = true
		}
	}
	var out []netip.Prefix
	for _, p := range holding(ep) {
		if !taken[p] {
			out = append(out, p)
		}
	}
	return out, nil
}

// Leave removes the endpoint record and the veth pair.
func (n NetworkDriver) Leave(r *network.LeaveRequest) error {
	d := n.d
	ctx, done := d.call()
	defer done()
	return d.unwire(ctx, r.EndpointID)
}

// unwire deletes the endpoint record before the interface, so the agent
// stops routing to it first; both steps tolerate being done already. The
// interface deleted is the one derived from the endpoint's name, never
// one a record names; and a record under that name that is not this
// endpoint's (another orchestrator's workload, or a record claiming
// another container id) is left alone with its interface.
func (d *Drivers) unwire(ctx context.Context, endpointID string) error {
	workload := Workload(endpointID)
	key := datastore.EndpointKey(d.node, workload)
	iface := api.WorkloadIfaceName(d.node, workload)
	raw, _, err := d.c.DS.GetRaw(ctx, key)
	switch {
	case errors.Is(err, datastore.ErrNotFound):
	case err != nil:
		return err
	default:
		var ep api.Endpoint
		if json.Unmarshal(raw, &ep) == nil && (ep.Orchestrator != api.OrchestratorLibnetwork || ep.ContainerID != endpointID) {
			d.log.Warn("the endpoint record of this name is not this libnetwork endpoint's; leaving it and its interface alone",
				"endpoint", short(endpointID), "record", key, "orchestrator", ep.Orchestrator, "container", short(ep.ContainerID))
			return nil
		}
		if ep.InterfaceName != iface {
			d.log.Warn("the endpoint record names an interface that is not its own; deleting only its own", "endpoint", short(endpointID), "named", ep.InterfaceName, "own", iface)
		}
		if err := d.c.DS.DeleteKey(ctx, key, 0); err != nil {
			return err
		}
	}
	return netdev.RemoveWorkload(iface)
}

func (NetworkDriver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (NetworkDriver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }
