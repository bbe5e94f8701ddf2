// Package options is calico-node's command line, in one place: the flags,
// their defaults and help texts, and their validation. calico-node parses
// it; `calicoctl node` declares the same flags, checks them the same way
// before it starts the agent, and hands them on with Args, so the two
// cannot drift apart. (kube-router's pkg/options has the same shape.)
//
// Adding a flag is a field below and one line in AddFlags; Args passes it
// on by itself.
package options

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// Defaults the agent uses when a flag is not given.
const (
	DefaultResyncInterval = 30 * time.Second
	// DefaultSweepGrace is how long a workload interface or IPAM handle may
	// stay unowned: long enough for a slow `container add` to finish.
	DefaultSweepGrace = 60 * time.Second
)

// EtcdEndpointsHelp is the help text of --etcd-endpoints, a flag of
// calico-node and of every calicoctl command.
const EtcdEndpointsHelp = "etcd URLs, comma-separated (default: ETCD_ENDPOINTS, ETCD_AUTHORITY, 127.0.0.1:2379)"

// Node is calico-node's flags. The datastore is not among them: the agent
// takes --etcd-endpoints, calicoctl hands its own datastore on in the
// environment.
type Node struct {
	Name     string // "": CALICO_NODENAME, else the host name
	IP       string
	IP6      string
	AS       string // "": the cluster default
	BGPPort  int
	HoldTime time.Duration
	// RestartTime is BGP graceful restart time (negative disables it).
	RestartTime          time.Duration
	WorkloadToHost       string
	WorkloadControlPlane string
	ResyncInterval       time.Duration
	SweepGrace           time.Duration
	Debug                bool
	// RouteReflector makes the node a BGP route reflector for the nodes
	// that list it as a peer; ClusterID is its cluster ID ("": its --ip).
	RouteReflector bool
	ClusterID      string
	// PublishPorts is the range of host ports workloads may publish
	// (docker run -p): MIN-MAX.
	PublishPorts string
	// PrometheusListen is where the agent serves /metrics, ADDR:PORT
	// ("": off).
	PrometheusListen string

	// The Docker integration.
	Libnetwork bool
	DockerHost string // "": DOCKER_HOST, else the engine's default socket
	PluginDir  string // "": libnetwork.DefaultPluginDir
}

// NewNode is the agent's defaults.
func NewNode() *Node {
	return &Node{
		WorkloadToHost:       string(nft.HostAccessDrop),
		WorkloadControlPlane: string(nft.ControlPlaneDrop),
		ResyncInterval:       DefaultResyncInterval,
		SweepGrace:           DefaultSweepGrace,
		PublishPorts:         fmt.Sprintf("%d-%d", api.DefaultPublishPorts.Min, api.DefaultPublishPorts.Max),
	}
}

// AddFlags declares the flags on fs, each bound to its field, with the
// field's current value as the default.
func (o *Node) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Name, "name", o.Name, "node name (default: CALICO_NODENAME, else the host name)")
	fs.StringVar(&o.IP, "ip", o.IP, "this host's IPv4 address on the network between hosts (required)")
	fs.StringVar(&o.IP6, "ip6", o.IP6, "this host's IPv6 address (for IPv6 routes)")
	fs.StringVar(&o.AS, "as", o.AS, "this node's AS number (default: the cluster default, 64512)")
	fs.IntVar(&o.BGPPort, "bgp-port", o.BGPPort, "BGP port (default 179)")
	fs.DurationVar(&o.HoldTime, "bgp-hold-time", o.HoldTime, "BGP hold time: a lost host's routes go after hold time + restart time (default 90s)")
	fs.DurationVar(&o.RestartTime, "bgp-restart-time", o.RestartTime, "BGP graceful restart time: peers keep this host's routes while its agent restarts, also after the hold time expires (default 120s; negative disables)")
	fs.StringVar(&o.WorkloadToHost, "workload-to-host", o.WorkloadToHost, "what workloads may send to this host's own services: drop (nothing), or policy (their outbound profile rules decide)")
	fs.StringVar(&o.WorkloadControlPlane, "workload-control-plane", o.WorkloadControlPlane, "what this host's workloads may send to any node's control plane (etcd client and peer ports, BGP, VXLAN): drop (nothing), or policy (their outbound profile rules decide)")
	fs.DurationVar(&o.ResyncInterval, "resync-interval", o.ResyncInterval, "full reconcile of the kernel state")
	fs.DurationVar(&o.SweepGrace, "sweep-grace", o.SweepGrace, "how long a workload interface or IPAM handle of this host stays unowned (an interrupted container add or remove) before calico-node removes it")
	fs.BoolVar(&o.Debug, "debug", o.Debug, "debug logging")
	fs.BoolVar(&o.RouteReflector, "route-reflector", o.RouteReflector, "make this node a BGP route reflector: every node that lists its address as a BGP peer becomes its client")
	fs.StringVar(&o.PublishPorts, "publish-ports", o.PublishPorts, "the host ports workloads may publish (docker run -p), MIN-MAX; the default leaves the privileged ports, where the host's own services live, to the host")
	fs.StringVar(&o.ClusterID, "cluster-id", o.ClusterID, "the route reflector's cluster ID, an IPv4 address shared by the reflectors of one group (default: --ip)")
	fs.StringVar(&o.PrometheusListen, "prometheus-listen", o.PrometheusListen, "serve Prometheus metrics at http://ADDR:PORT/metrics (for example 10.0.0.1:9091; off by default); workloads never reach the port: it joins the control plane every agent guards, so give every node the same port")
	fs.BoolVar(&o.Libnetwork, "libnetwork", o.Libnetwork, "also serve the Docker network driver \"calico\" and IPAM driver \"calico-ipam\"")
	fs.StringVar(&o.DockerHost, "docker-host", o.DockerHost, "this host's Docker engine (default: DOCKER_HOST, else unix:///var/run/docker.sock); \"none\" turns the Docker integration off")
	fs.StringVar(&o.PluginDir, "plugin-dir", o.PluginDir, "where the Docker plugin sockets go (default /run/docker/plugins, where the engine looks)")
}

// Args renders o as the flags that differ from the defaults, in the form
// AddFlags parses: what `calicoctl node` passes to calico-node.
func (o *Node) Args() []string {
	def, cur := pflag.NewFlagSet("default", pflag.ContinueOnError), pflag.NewFlagSet("current", pflag.ContinueOnError)
	NewNode().AddFlags(def)
	c := *o // AddFlags rebinds the fields; o itself stays untouched
	c.AddFlags(cur)
	var args []string
	cur.VisitAll(func(f *pflag.Flag) {
		if v := f.Value.String(); v != def.Lookup(f.Name).Value.String() {
			args = append(args, "--"+f.Name+"="+v)
		}
	})
	return args
}

// NodeName is --name, else CALICO_NODENAME, else the host name.
func (o *Node) NodeName() (string, error) {
	if o.Name != "" {
		return o.Name, api.ValidateName("node", o.Name)
	}
	if n := os.Getenv("CALICO_NODENAME"); n != "" {
		return n, api.ValidateName("node", n)
	}
	return os.Hostname()
}

// Values are the flags that need parsing, parsed.
type Values struct {
	IP, IP6        netip.Addr // IP6 is invalid when not given
	ClusterID      netip.Addr // invalid when not given
	ASN            uint32     // 0: the cluster default
	ToHost         nft.HostAccess
	ToControlPlane nft.ControlPlaneAccess
	PublishPorts   api.PortRange
	// Prometheus is --prometheus-listen; invalid when off. An empty ADDR
	// (":9091") is every address.
	Prometheus netip.AddrPort
}

// Validate checks every flag and returns the parsed values; the error is
// one line naming the flag and what it wants.
func (o *Node) Validate() (Values, error) {
	var v Values
	var err error
	if v.IP, err = netip.ParseAddr(o.IP); err != nil || !v.IP.Is4() {
		return v, fmt.Errorf("--ip: want this host's IPv4 address, got %q", o.IP)
	}
	if o.IP6 != "" {
		if v.IP6, err = netip.ParseAddr(o.IP6); err != nil || v.IP6.Is4() {
			return v, fmt.Errorf("--ip6: want this host's IPv6 address, got %q", o.IP6)
		}
	}
	if o.AS != "" {
		if v.ASN, err = api.ParseASNumber(o.AS); err != nil {
			return v, err
		}
	}
	if o.ClusterID != "" {
		if !o.RouteReflector {
			return v, fmt.Errorf("--cluster-id: only for a route reflector; add --route-reflector")
		}
		if err := api.ValidateClusterID(o.ClusterID); err != nil {
			return v, fmt.Errorf("--cluster-id: %w", err)
		}
		v.ClusterID = netip.MustParseAddr(o.ClusterID)
	}
	if o.BGPPort < 0 || o.BGPPort > 65535 {
		return v, fmt.Errorf("--bgp-port: want a port number 1-65535 (0: 179), got %d", o.BGPPort)
	}
	if v.ToHost, err = nft.ParseHostAccess(o.WorkloadToHost); err != nil {
		return v, err
	}
	if v.ToControlPlane, err = nft.ParseControlPlaneAccess(o.WorkloadControlPlane); err != nil {
		return v, err
	}
	if o.ResyncInterval <= 0 {
		return v, fmt.Errorf("--resync-interval: want a positive duration, got %s", o.ResyncInterval)
	}
	if o.SweepGrace <= 0 {
		return v, fmt.Errorf("--sweep-grace: want a positive duration, got %s", o.SweepGrace)
	}
	if v.PublishPorts, err = parsePortRange(o.PublishPorts); err != nil {
		return v, fmt.Errorf("--publish-ports: %v", err)
	}
	if o.PrometheusListen != "" {
		if v.Prometheus, err = parseListen(o.PrometheusListen); err != nil {
			return v, fmt.Errorf("--prometheus-listen: %v", err)
		}
	}
	return v, nil
}

// parseListen reads ADDR:PORT, where an empty ADDR means every address
// (returned as 0.0.0.0).
func parseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil || n < 1 || n > 65535 {
		return netip.AddrPort{}, fmt.Errorf("want ADDR:PORT such as 127.0.0.1:9091 or :9091, got %q", s)
	}
	a := netip.IPv4Unspecified()
	if host != "" {
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("want ADDR:PORT with an IP address, got %q", s)
		}
	}
	return netip.AddrPortFrom(a, uint16(n)), nil
}

// parsePortRange reads MIN-MAX (or one port) of 1-65535.
func parsePortRange(s string) (api.PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		hi = lo
	}
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return api.PortRange{}, fmt.Errorf("want MIN-MAX with 1 <= MIN <= MAX <= 65535, got %q", s)
	}
	return api.PortRange{Min: uint16(a), Max: uint16(b)}, nil
}
