package libnetwork

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Reconcile drops what the engine no longer knows: endpoints whose
// DeleteEndpoint never reached us (the engine removed the container while
// this agent was down), and addresses the IPAM driver handed out that no
// endpoint holds. Run it before serving, so no engine call is in flight.
// It returns what it removed, for the log.
func (d *Drivers) Reconcile(ctx context.Context) (removed []string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, live, err := d.engine.DriverEndpoints(ctx, d.DriverName)
	if err != nil {
		return nil, fmt.Errorf("cannot list the engine's calico endpoints, so none are reconciled: %w", err)
	}
	recs, err := datastore.List[endpointRecord](ctx, d.c.DS, datastore.LibnetworkEndpointPrefix(d.node))
	if err != nil {
		return nil, err
	}
	var keep []string                // addresses of endpoints the engine still has
	networkOf := map[string]string{} // live endpoint id -> network id
	for _, kv := range recs {
		if live[kv.Value.ID] {
			keep = append(keep, kv.Value.Addrs...)
			networkOf[kv.Value.ID] = kv.Value.NetworkID
			continue
		}
		if err := d.unwire(ctx, kv.Value.ID); err != nil {
			return removed, err
		}
		d.release(ctx, kv.Value.Claimed)
		if err := d.c.DS.DeleteKey(ctx, kv.Key, 0); err != nil {
			return removed, err
		}
		removed = append(removed, "endpoint "+short(kv.Value.ID))
	}
	// Endpoint records of the agent without a driver record (a crash
	// between the two writes) go the same way.
	eps, err := d.c.Endpoints(ctx, d.node)
	if err != nil {
		return removed, err
	}
	for _, ep := range eps {
		// A live endpoint whose container this agent never learnt (it
		// stopped just after the Join) learns it now.
		if nw := networkOf[ep.ContainerID]; ep.Orchestrator == api.OrchestratorLibnetwork && ep.DockerID == "" && nw != "" {
			d.learnContainerLater(ep.ContainerID, nw)
		}
		if ep.Orchestrator == api.OrchestratorLibnetwork && !live[ep.ContainerID] {
			if err := d.unwire(ctx, ep.ContainerID); err != nil {
				return removed, err
			}
			removed = append(removed, "endpoint "+short(ep.ContainerID))
		}
	}
	// Addresses under the driver's handle that no live endpoint holds.
	h, _, err := datastore.Get[api.Handle](ctx, d.c.DS, datastore.HandleKey(api.LibnetworkHandle(d.node)))
	if errors.Is(err, datastore.ErrNotFound) {
		return removed, nil
	} else if err != nil {
		return removed, err
	}
	for _, s := range h.IPs {
		a, err := netip.ParseAddr(strings.Split(s, "/")[0])
		if err != nil || slices.Contains(keep, netip.PrefixFrom(a, a.BitLen()).String()) {
			continue
		}
		if err := d.c.IPAM.ReleaseFrom(ctx, a, api.LibnetworkHandle(d.node)); err != nil && !isNotOurs(err) {
			return removed, err
		}
		removed = append(removed, "address "+a.String())
	}
	return removed, nil
}
