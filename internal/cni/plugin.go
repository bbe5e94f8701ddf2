package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// callTimeout bounds one plugin call: runtimes wait for us with their own
// deadline, and an answer saying "try again" beats being killed midway.
const callTimeout = 30 * time.Second

// Funcs are the full calico plugin's commands, for skel.PluginMainFuncs:
// what cniagent's front runs when the agent does not (the calico-ipam
// binary started as cniagent.FullPluginName), and what the agent's Server
// runs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: traced("ADD", add), Del: traced("DEL", del), Check: traced("CHECK", check), GC: GC, Status: Status}
}

// traced is fn as a plugin command, traced (cniagent.TraceEnv).
func traced(command string, fn op) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		ctx, done := startTrace(context.Background(), command)
		defer done()
		return runHere(ctx, args, fn)
	}
}

// op is one command on one attachment (workload name) with a session;
// the result, when not nil, is what the plugin prints.
type op func(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error)

// ops are the commands the agent serves, by CNI_COMMAND.
var ops = map[string]op{"ADD": add, "DEL": del, "CHECK": check}

// session is what every command starts with: the configuration, a
// datastore client and this host's node name.
type session struct {
	conf *NetConf
	c    *client.Client
	node string
}

func open(ctx context.Context, stdin []byte) (*session, error) {
	conf, err := ParseConf(stdin)
	if err != nil {
		return nil, err
	}
	client.MarkPhase(ctx, "config")
	c, err := client.Connect(ctx, conf.EtcdEndpoints)
	if err != nil {
		return nil, cniError(err, "connecting to the datastore")
	}
	if t := client.TraceFrom(ctx); t != nil {
		t.CountWith(c.DS.Calls)
	}
	client.MarkPhase(ctx, "connect")
	node := conf.Nodename
	if node == "" {
		if node, err = c.ThisNode(ctx); err != nil {
			c.Close()
			return nil, cniError(err, "finding this host's node")
		}
	}
	if _, err := c.Node(ctx, node); err != nil {
		c.Close()
		return nil, cniError(err, fmt.Sprintf("node %q (start it with `calicoctl node`, or set \"nodename\" in the conflist)", node))
	}
	client.MarkPhase(ctx, "node")
	return &session{conf: conf, c: c, node: node}, nil
}

// cniError turns err into a CNI error: a datastore that does not answer
// is "try again later" (11), everything else internal (999); the message
// keeps the client's hint on what to do.
func cniError(err error, doing string) error {
	var te *types.Error
	if errors.As(err, &te) {
		return te
	}
	code := types.ErrInternal
	if errors.Is(err, datastore.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, fmt.Sprintf("calico: %s: %v", doing, err), "")
}

// add wires the container with client.AddWorkload, which creates the
// network's profile if missing. A second ADD of the same attachment finds its
// record and returns the same result (no second address).
func add(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
	ips, err := s.conf.requestedIPs()
	if err != nil {
		return nil, err
	}
	labels, err := s.conf.endpointLabels(args.Args)
	if err != nil {
		return nil, err
	}
	ep, err := s.c.AddWorkload(ctx, client.WorkloadRequest{
		Node: s.node, Name: name, IPs: ips, NetnsPath: args.Netns, Interface: args.IfName,
		Orchestrator: api.OrchestratorCNI, ContainerID: args.ContainerID, Profiles: s.conf.Profiles,
		CreateProfiles: true, Pools: s.conf.IPAM.pools(), Labels: labels,
	})
	if err != nil {
		return nil, cniError(err, "adding container "+args.ContainerID)
	}
	res, err := result(ep)
	if err != nil {
		return nil, cniError(err, "describing the result")
	}
	out, err := chained(&s.conf.NetConf, res)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// result is ep as CNI reports it: the host side and the container's
// interface, each address with its gateway, and the default routes.
func result(ep api.Endpoint) (*current.Result, error) {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: ep.InterfaceName, Mac: netdev.HostSideMAC},
			{Name: ep.WorkloadIface, Mac: ep.MAC, Sandbox: ep.NetnsPath},
		},
	}
	var v4, v6 bool
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return nil, err
		}
		gw := netdev.GatewayIPv4
		if p.Addr().Is6() {
			gw, v6 = netdev.GatewayIPv6, true
		} else {
			v4 = true
		}
		res.IPs = append(res.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
			Gateway:   gw.AsSlice(),
		})
	}
	if v4 {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: netdev.GatewayIPv4.AsSlice()})
	}
	if v6 {
		res.Routes = append(res.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: netdev.GatewayIPv6.AsSlice()})
	}
	return res, nil
}

// chained is res after the earlier plugins' result (prevResult, when
// calico is not first in its list): theirs first, then ours, with our IPs
// pointing at our interfaces' new indices.
func chained(conf *types.NetConf, res *current.Result) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return res, nil
	}
	if err := version.ParsePrevResult(conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "calico: reading prevResult: "+err.Error(), "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "calico: converting prevResult: "+err.Error(), "")
	}
	shift := len(prev.Interfaces)
	prev.Interfaces = append(prev.Interfaces, res.Interfaces...)
	for _, ip := range res.IPs {
		if ip.Interface != nil {
			ip.Interface = current.Int(*ip.Interface + shift)
		}
		prev.IPs = append(prev.IPs, ip)
	}
	prev.Routes = append(prev.Routes, res.Routes...)
	prev.CNIVersion = res.CNIVersion
	return prev, nil
}

// del removes the attachment: record, veth, addresses. An attachment we
// do not know is no error (the spec's DEL is idempotent).
func del(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
	if _, err := s.c.RemoveWorkload(ctx, s.node, name); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return nil, cniError(err, "removing container "+args.ContainerID)
	}
	return nil, nil
}

// check compares the attachment with the kernel: the record, its host
// side, and inside the container the interface, every address and the
// default route via the gateway. Each missing piece is an error naming it.
func check(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
	ep, _, err := s.c.Endpoint(ctx, s.node, name)
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, types.NewError(types.ErrUnknownContainer, fmt.Sprintf("calico: container %s has no endpoint on node %s; add it again (DEL then ADD)", args.ContainerID, s.node), "")
	} else if err != nil {
		return nil, cniError(err, "reading the endpoint")
	}
	if !netdev.LinkExists(ep.InterfaceName) {
		return nil, broken(args, "its host-side interface %s is missing", ep.InterfaceName)
	}
	var problem string
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		problem = checkInside(ep, args.IfName)
		return nil
	})
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("calico: container %s: netns %s: %v", args.ContainerID, args.Netns, err), "")
	}
	if problem != "" {
		return nil, broken(args, "%s", problem)
	}
	return nil, nil
}

func broken(args *skel.CmdArgs, format string, a ...any) error {
	return types.NewError(types.ErrInternal, fmt.Sprintf("calico: container %s: ", args.ContainerID)+fmt.Sprintf(format, a...)+"; re-create its network (DEL then ADD, or restart the container)", "")
}

// checkInside runs in the container's namespace: what of ep is missing
// there, or "".
func checkInside(ep api.Endpoint, ifName string) string {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return fmt.Sprintf("interface %s is missing inside the container", ifName)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Sprintf("listing the addresses of %s: %v", ifName, err)
	}
	have := map[netip.Addr]bool{}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok {
			have[x.Unmap()] = true
		}
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Sprintf("listing the routes of %s: %v", ifName, err)
	}
	defaultVia := func(gw netip.Addr) bool {
		for _, r := range routes {
			g, _ := netip.AddrFromSlice(r.Gw)
			if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && g.Unmap() == gw {
				return true
			}
		}
		return false
	}
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return fmt.Sprintf("the endpoint's address %q is malformed", n)
		}
		if !have[p.Addr()] {
			return fmt.Sprintf("address %s is missing from %s", p.Addr(), ifName)
		}
		gw := netdev.GatewayIPv4
		if p.Addr().Is6() {
			gw = netdev.GatewayIPv6
		}
		if !defaultVia(gw) {
			return fmt.Sprintf("the default route via %s is missing from %s", gw, ifName)
		}
	}
	return ""
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// attach runs fn for one attachment (container id and interface) with a
// session of its own, all of it within callTimeout, and prints fn's
// result: the prologue of every command but GC and STATUS.
func attach(args *skel.CmdArgs, fn op) error {
	return runHere(context.Background(), args, fn)
}

// runHere is attach under ctx (which may carry a trace).
func runHere(ctx context.Context, args *skel.CmdArgs, fn op) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	name, err := WorkloadName(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	s, err := open(ctx, args.StdinData)
	if err != nil {
		return err
	}
	defer s.c.Close()
	res, err := fn(ctx, s, args, name)
	if err != nil || res == nil {
		return err
	}
	return types.PrintResult(res, s.conf.CNIVersion)
}

// GC (CNI 1.1) removes what the runtime no longer has: every endpoint of
// this network on this node (orchestrator cni, labelled LabelNetwork with
// the network's name) whose container and interface are not among the
// valid attachments the runtime passed. Each goes as DEL takes it (record,
// veth, addresses). Endpoints without the label (made before ADD set it,
// or by another path) are never touched: GC removes only what it knows is
// this network's. The runtime does not GC an attachment it is adding, as
// the spec requires, so a record appearing meanwhile is one it will list.
func GC(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	s, err := open(ctx, args.StdinData)
	if err != nil {
		return err
	}
	defer s.c.Close()
	valid := map[string]bool{}
	for _, a := range s.conf.ValidAttachments {
		if name, err := WorkloadName(a.ContainerID, a.IfName); err == nil {
			valid[name] = true
		}
	}
	eps, err := s.c.Endpoints(ctx, s.node)
	if err != nil {
		return cniError(err, "listing this node's endpoints")
	}
	var errs []error
	for _, ep := range eps {
		if ep.Orchestrator != api.OrchestratorCNI || ep.Labels[LabelNetwork] != s.conf.Name || valid[ep.Workload] {
			continue
		}
		if _, err := s.c.RemoveWorkload(ctx, s.node, ep.Workload); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", ep.Workload, err))
		}
	}
	if len(errs) > 0 {
		return cniError(errors.Join(errs...), "removing stale attachments")
	}
	return nil
}

// Status says whether the plugin can take ADDs: the datastore answers and
// this host's node is registered.
func Status(args *skel.CmdArgs) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	s, err := open(ctx, args.StdinData)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) && te.Code == types.ErrTryAgainLater {
			te.Code = types.ErrLimitedConnectivity
		}
		return err
	}
	s.c.Close()
	return nil
}
