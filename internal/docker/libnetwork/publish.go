package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// portMapOption is where the engine passes `docker run -p` to the driver
// of the container's gateway endpoint.
const portMapOption = "com.docker.network.portmap"

// engineBinding is the engine's PortBinding as it arrives in JSON.
type engineBinding struct {
	Proto       int    // IANA protocol number: 6 tcp, 17 udp
	IP          string // the container's address (unused: the record has it)
	Port        uint16
	HostIP      string
	HostPort    uint16
	HostPortEnd uint16
}

// portBindings reads the engine's bindings as the endpoint record's ports.
// IPv6 host addresses are left out (only IPv4 is published); what cannot be
// published is an error naming the flag to change.
func portBindings(opts map[string]any) ([]api.PortMapping, error) {
	raw, ok := opts[portMapOption]
	if !ok || raw == nil {
		return nil, nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	var bs []engineBinding
	if err := json.Unmarshal(b, &bs); err != nil {
		return nil, fmt.Errorf("the engine's port bindings %s: %v", b, err)
	}
	var out []api.PortMapping
	for _, e := range bs {
		m := api.PortMapping{HostPort: e.HostPort, Port: e.Port}
		switch e.Proto {
		case 6:
			m.Proto = "tcp"
		case 17:
			m.Proto = "udp"
		default:
			return nil, fmt.Errorf("-p %d: calico publishes tcp and udp ports only", e.Port)
		}
		if e.HostPort == 0 {
			return nil, fmt.Errorf("-p %d/%s: calico networks publish only explicit host ports; write -p HOSTPORT:%d", e.Port, m.Proto, e.Port)
		}
		if e.HostPortEnd > e.HostPort {
			return nil, fmt.Errorf("-p %d-%d:%d/%s: calico networks publish one host port per container port; write -p HOSTPORT:%d", e.HostPort, e.HostPortEnd, e.Port, m.Proto, e.Port)
		}
		if e.HostIP != "" {
			ip, err := netip.ParseAddr(e.HostIP)
			if err != nil {
				return nil, fmt.Errorf("-p %s:%d:%d: bad host address", e.HostIP, e.HostPort, e.Port)
			}
			ip = ip.Unmap()
			if !ip.Is4() {
				continue // IPv6 is not published (the engine adds :: beside 0.0.0.0)
			}
			if !ip.IsUnspecified() {
				m.HostIP = ip.String()
			}
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// ProgramExternalConnectivity publishes the container's ports: the engine
// calls it for the endpoint holding the container's default route. The
// ports go into the endpoint record; the agent, which owns the nftables
// table, DNATs them (and drops them with the record at Leave).
func (n NetworkDriver) ProgramExternalConnectivity(r *network.ProgramExternalConnectivityRequest) error {
	ports, err := portBindings(r.Options)
	if err != nil {
		return err
	}
	d := n.d
	ctx, done := d.call()
	defer done()
	return d.setPorts(ctx, r.EndpointID, ports)
}

// RevokeExternalConnectivity unpublishes them (the default route moved to
// another endpoint, or the container goes).
func (n NetworkDriver) RevokeExternalConnectivity(r *network.RevokeExternalConnectivityRequest) error {
	d := n.d
	ctx, done := d.call()
	defer done()
	return d.setPorts(ctx, r.EndpointID, nil)
}

// setPorts writes ports into the endpoint's record, compared-and-swapped,
// and only into this libnetwork endpoint's own record.
func (d *Drivers) setPorts(ctx context.Context, endpointID string, ports []api.PortMapping) error {
	key := datastore.EndpointKey(d.node, Workload(endpointID))
	for range 3 {
		ep, rev, err := datastore.Get[api.Endpoint](ctx, d.c.DS, key)
		if errors.Is(err, datastore.ErrNotFound) {
			if len(ports) == 0 {
				return nil // left already: nothing published
			}
			return fmt.Errorf("endpoint %s has not joined on host %s; cannot publish its ports", short(endpointID), d.node)
		} else if err != nil {
			return err
		}
		if ep.Orchestrator != api.OrchestratorLibnetwork || ep.ContainerID != endpointID {
			return fmt.Errorf("the endpoint record %s is not endpoint %s's (orchestrator %s, container %.12s); not publishing", key, short(endpointID), ep.Orchestrator, ep.ContainerID)
		}
		if slices.Equal(ep.Ports, ports) {
			return nil
		}
		ep.Ports = ports
		if err := d.c.DS.CAS(ctx, key, rev, ep); !errors.Is(err, datastore.ErrConflict) {
			if err == nil {
				d.log.Info("published ports", "endpoint", short(endpointID), "ports", ports)
			}
			return err
		}
	}
	return fmt.Errorf("endpoint %s: its record kept changing while its ports were written; try again", short(endpointID))
}
