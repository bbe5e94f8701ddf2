// Package cni is the CNI entry point to the one endpoint lifecycle: the
// calico plugin's ADD, DEL, CHECK and STATUS (cmd/calico) and the
// calico-ipam plugin (cmd/calico-ipam). ADD fills a client.WorkloadRequest
// (orchestrator "cni") and calls client.AddWorkload, exactly as `calicoctl
// container add` does: the same record, derived interface, IPAM handle,
// lock and undo. DEL is client.RemoveWorkload; CHECK compares the record
// with the kernel. Protocol parsing is the CNI library's (skel, types 100).
package cni

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"strconv"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/calico-go/calico/internal/api"
)

// NetConf is the calico plugin's configuration: the network's entry in a
// conflist, with the fields Calico's own CNI plugin reads outside
// Kubernetes.
type NetConf struct {
	types.NetConf
	// EtcdEndpoints: comma-separated; empty means the usual environment
	// (ETCD_ENDPOINTS, ETCD_AUTHORITY, TLS files), as calicoctl reads it.
	EtcdEndpoints string `json:"etcd_endpoints,omitempty"`
	// Nodename: this host's node name; empty means the registered node
	// whose address is on one of this host's interfaces.
	Nodename string `json:"nodename,omitempty"`
	// MTU is accepted for compatibility with Calico's conflists but not
	// applied: the workload's MTU is its pool's (calc.WorkloadMTU), the one
	// the agent keeps on every pass.
	MTU  int      `json:"mtu,omitempty"`
	IPAM IPAMConf `json:"ipam"`
	// Profiles, when given, replace the default profile (the network's
	// name).
	Profiles []string `json:"profiles,omitempty"`
	// Labels go on every endpoint of the network.
	Labels        map[string]string `json:"labels,omitempty"`
	RuntimeConfig struct {
		IPs []string `json:"ips,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// IPAMConf is the ipam section: calico-ipam with Calico's options.
type IPAMConf struct {
	Type       string   `json:"type"`
	AssignIPv4 *flag    `json:"assign_ipv4,omitempty"`
	AssignIPv6 *flag    `json:"assign_ipv6,omitempty"`
	IPv4Pools  []string `json:"ipv4_pools,omitempty"`
	IPv6Pools  []string `json:"ipv6_pools,omitempty"`
}

// flag is a boolean written as Calico's CNI plugin writes it ("true") or
// as JSON (true).
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) != nil {
		s = string(b)
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true or false, got %s", b)
	}
	*f = flag(v)
	return nil
}

// ParseConf reads and checks a plugin's configuration. Its errors are
// CNI errors saying what to change in the conflist.
func ParseConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "calico: reading the network configuration: "+err.Error(), "fix the conflist's JSON")
	}
	bad := func(format string, args ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, "calico: "+fmt.Sprintf(format, args...), "")
	}
	if c.Name == "" {
		return nil, bad("the network has no name; give the conflist a \"name\" (it names the network's profile)")
	}
	if c.IPAM.Type != "calico-ipam" {
		return nil, bad("ipam type %q is not supported; use {\"type\": \"calico-ipam\"}", c.IPAM.Type)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 9000) {
		return nil, bad("mtu %d is out of range; leave it out (the pool's MTU is used)", c.MTU)
	}
	profiles := c.Profiles
	if len(profiles) == 0 {
		profiles = []string{c.Name}
	}
	for _, p := range profiles {
		if err := api.ValidateName("profile", p); err != nil {
			return nil, bad("%v; the network's name is its profile's, so rename the network or give \"profiles\"", err)
		}
	}
	c.Profiles = profiles
	for k, v := range c.Labels {
		if err := checkLabel(k, v); err != nil {
			return nil, bad("%v; fix \"labels\"", err)
		}
	}
	for _, s := range append(append([]string{}, c.IPAM.IPv4Pools...), c.IPAM.IPv6Pools...) {
		if _, err := netip.ParsePrefix(s); err != nil {
			return nil, bad("ipam pool %q is not a CIDR; list pools as `calicoctl pool show` prints them", s)
		}
	}
	if !c.IPAM.assign4() && !c.IPAM.assign6() && len(c.RuntimeConfig.IPs) == 0 {
		return nil, bad("ipam assigns no address (assign_ipv4 and assign_ipv6 both false); turn one on")
	}
	return c, nil
}

func (i IPAMConf) assign4() bool { return i.AssignIPv4 == nil || bool(*i.AssignIPv4) }
func (i IPAMConf) assign6() bool { return i.AssignIPv6 != nil && bool(*i.AssignIPv6) }

// pools are the pools auto-assignment may use; nil means any.
func (i IPAMConf) pools() []string {
	return append(append([]string{}, i.IPv4Pools...), i.IPv6Pools...)
}

// allows says whether a requested address may be taken: when the conflist
// names the pools of its family (ipv4_pools, ipv6_pools), only from them.
// The address comes from the runtime's "ips" capability, which in a
// cluster carries what the pod's author wrote (an annotation); without
// this, a pod on a network held to its own pool took an address in
// another network's pool, and with it whatever trusts that pool's range
// (a policy's nets, a peer's firewall).
func (i IPAMConf) allows(a netip.Addr) error {
	pools := i.IPv4Pools
	if a.Unmap().Is6() {
		pools = i.IPv6Pools
	}
	if len(pools) == 0 {
		return nil
	}
	for _, s := range pools {
		if p, err := netip.ParsePrefix(s); err == nil && p.Contains(a.Unmap()) {
			return nil
		}
	}
	return types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("calico: requested address %s is outside this network's pools %v", a, pools),
		"request an address in one of the pools the conflist's ipam names, or leave \"ips\" out")
}

// requestedIPs are what AddWorkload is asked for: the runtime's requested
// addresses (capability "ips") if any, else "auto"/"auto6" by family.
func (c *NetConf) requestedIPs() ([]string, error) {
	if len(c.RuntimeConfig.IPs) > 0 {
		var out []string
		for _, s := range c.RuntimeConfig.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				p, perr := netip.ParsePrefix(s)
				if perr != nil {
					return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("calico: requested address %q is not an IP address", s), "")
				}
				a = p.Addr()
			}
			if err := c.IPAM.allows(a); err != nil {
				return nil, err
			}
			out = append(out, a.String())
		}
		return out, nil
	}
	var out []string
	if c.IPAM.assign4() {
		out = append(out, "auto")
	}
	if c.IPAM.assign6() {
		out = append(out, "auto6")
	}
	return out, nil
}

// WorkloadName is the workload a CNI attachment is: its container and
// interface, so one container on two networks has two endpoints.
func WorkloadName(containerID, ifName string) (string, error) {
	name := containerID + "." + ifName
	if err := api.ValidateName("container", name); err != nil {
		return "", types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("calico: container id %q with interface %q: %v", containerID, ifName, err), "")
	}
	return name, nil
}

var (
	labelKey   = regexp.MustCompile(`^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$`)
)

// checkLabel accepts Kubernetes-style labels, which selectors can name.
func checkLabel(k, v string) error {
	if !labelKey.MatchString(k) {
		return fmt.Errorf("label key %q: use [prefix/]name of letters, digits, '-', '_', '.' (at most 63)", k)
	}
	if !labelValue.MatchString(v) {
		return fmt.Errorf("label %s=%q: use letters, digits, '-', '_', '.' (at most 63)", k, v)
	}
	return nil
}

// runtimeArgs are the CNI_ARGS a runtime passes (podman and Kubernetes
// runtimes set the K8S_ ones; IgnoreUnknown lets others through). The
// field names are the argument names: types.LoadArgs matches them.
type runtimeArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString
	K8S_POD_NAME               types.UnmarshallableString
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString
	K8S_POD_UID                types.UnmarshallableString
}

// Label keys the runtime's arguments become, as Calico names them.
const (
	LabelNamespace = api.LabelNamespace
	LabelPod       = api.LabelPod
)

// LabelNetwork names the network an endpoint was added by (the conflist's
// "name"): GC removes only its own network's endpoints, and selectors can
// pick a network's workloads.
const LabelNetwork = "cni.projectcalico.org/network"

// endpointLabels are the conflist's labels plus the runtime's pod
// namespace and name.
func (c *NetConf) endpointLabels(cniArgs string) (map[string]string, error) {
	var a runtimeArgs
	if err := types.LoadArgs(cniArgs, &a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "calico: CNI_ARGS: "+err.Error(), "pass IgnoreUnknown=1 with arguments calico does not know")
	}
	labels := maps.Clone(c.Labels)
	add := func(k string, v types.UnmarshallableString) error {
		if v == "" {
			return nil
		}
		if err := checkLabel(k, string(v)); err != nil {
			return types.NewError(types.ErrInvalidEnvironmentVariables, "calico: CNI_ARGS: "+err.Error(), "")
		}
		if labels == nil {
			labels = map[string]string{}
		}
		labels[k] = string(v)
		return nil
	}
	// Set over the conflist's labels: a conflist cannot hand its endpoints
	// to another network's GC.
	if err := checkLabel(LabelNetwork, c.Name); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "calico: the network's name labels its endpoints: "+err.Error(), "shorten the conflist's \"name\"")
	}
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelNetwork] = c.Name
	if err := add(LabelNamespace, a.K8S_POD_NAMESPACE); err != nil {
		return nil, err
	}
	if err := add(LabelPod, a.K8S_POD_NAME); err != nil {
		return nil, err
	}
	return labels, nil
}
