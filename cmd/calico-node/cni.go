package main

import (
	"context"
	"log/slog"

	"github.com/calico-go/calico/internal/cni"
	"github.com/calico-go/calico/internal/cniagent"
	"github.com/calico-go/calico/internal/datastore"
)

// startCNI serves the calico CNI plugin's calls for this node on the
// CNI socket of this network namespace (internal/cniagent) until ctx
// ends, once the node is registered. Without it (another agent holds the
// socket, CALICO_CNI_SOCKET=none) the plugin does the work itself.
func startCNI(ctx context.Context, log *slog.Logger, name string, ds datastore.Config) (wait func()) {
	stopped := make(chan struct{})
	socket := cniagent.Socket()
	if socket == "none" {
		close(stopped)
		return func() { <-stopped }
	}
	go func() {
		defer close(stopped)
		c, err := connectWhenRegistered(ctx, ds, name)
		if err != nil {
			return // ctx ended
		}
		defer c.Close()
		s := &cni.Server{C: c, Node: name, Datastore: ds, Log: log.With("component", "cni")}
		log.Info("serving the CNI plugin", "socket", socket)
		if err := s.Serve(ctx, socket); err != nil {
			log.Warn("not serving the CNI plugin; it reaches the datastore itself", "err", err)
		}
	}()
	return func() { <-stopped }
}
