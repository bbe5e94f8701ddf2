package libnetwork

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/docker"
)

// learnTimeout bounds the wait for the engine to list a joined endpoint
// on its network, and the questions about its container that follow.
const learnTimeout = time.Minute

// Join does not say which container joins: the engine names only its
// endpoint and sandbox, and it holds the container while it waits on Join,
// so asking about the container then would wait on ourselves. So just
// after Join the driver asks the engine which container the network lists
// with that endpoint, and records on the endpoint the container's name
// and id (`calicoctl container NAME` and `endpoint show` go by them) and
// its labels with the network's (the container's win on a clash).

// learnContainerLater runs learnContainer in the background, until Close.
func (d *Drivers) learnContainerLater(endpointID, networkID string) {
	d.learning.Add(1)
	go func() {
		defer d.learning.Done()
		ctx, cancel := context.WithTimeout(d.life, learnTimeout)
		defer cancel()
		if err := d.learnContainer(ctx, endpointID, networkID); err != nil && d.life.Err() == nil {
			d.log.Warn("the endpoint keeps no container name or Docker labels: "+err.Error(), "endpoint", short(endpointID))
		}
	}()
}

// errGone: the endpoint's record went (Leave) or is another's meanwhile.
var errGone = errors.New("endpoint record gone")

func (d *Drivers) learnContainer(ctx context.Context, endpointID, networkID string) error {
	var nw docker.Network
	var ctrID string
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var err error
		nw, err = d.engine.NetworkInspect(ctx, networkID)
		if err == nil {
			if ctrID = nw.Endpoints[endpointID]; ctrID != "" {
				break
			}
			err = errors.New("not listed yet")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the engine did not list the endpoint on network %s within %s (%v)", short(networkID), learnTimeout, err)
		case <-time.After(wait):
		}
	}
	ctr, err := d.engine.Lookup(ctx, ctrID)
	if err != nil {
		return err
	}
	run, err := d.engine.RunLabels(ctx, ctr)
	if err != nil {
		return fmt.Errorf("container %q: reading its image's labels, to tell which labels docker run gave: %w", ctr.Name, err)
	}
	labels, skipped := client.ForeignLabels(nw.Labels, run)
	for _, s := range skipped {
		d.log.Warn("Docker label not made an endpoint label: "+s.Error(), "container", ctr.Name, "network", nw.Name)
	}
	err = datastore.Update(ctx, d.c.DS, datastore.EndpointKey(d.node, Workload(endpointID)), func(e *api.Endpoint) error {
		if e.Orchestrator != api.OrchestratorLibnetwork || e.ContainerID != endpointID {
			return errGone
		}
		e.ContainerName, e.DockerID = ctr.Name, ctr.ID
		for k, v := range labels {
			if _, set := e.Labels[k]; set {
				continue // set meanwhile (calicoctl container NAME label add)
			}
			if e.Labels == nil {
				e.Labels = map[string]string{}
			}
			e.Labels[k] = v
		}
		return nil
	})
	if errors.Is(err, errGone) || errors.Is(err, datastore.ErrNotFound) {
		return nil // left already: nothing to name
	} else if err != nil {
		return err
	}
	d.log.Info("endpoint is container's", "endpoint", short(endpointID), "container", ctr.Name, "labels", len(labels))
	return nil
}

// Close stops what the drivers run in the background and waits for it.
func (d *Drivers) Close() {
	d.stop()
	d.learning.Wait()
}
