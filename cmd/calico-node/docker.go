package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/dataplane/dockerfwd"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/docker"
	"github.com/calico-go/calico/internal/docker/dockerwatch"
	"github.com/calico-go/calico/internal/docker/libnetwork"
	"github.com/calico-go/calico/internal/options"
)

// startDocker runs the Docker integration beside the agent until ctx ends:
// the events watcher whenever this host has an engine, and the plugins
// with --libnetwork. It waits for the agent to register the node, since
// wiring a container needs the node. The returned wait blocks until it
// has stopped (after ctx ends), so the plugin sockets are gone on exit.
func startDocker(ctx context.Context, log *slog.Logger, name string, ds datastore.Config, o *options.Node) (wait func()) {
	dockerHost, pluginDir := o.DockerHost, o.PluginDir
	if dockerHost == "" {
		dockerHost = os.Getenv("DOCKER_HOST")
	}
	if pluginDir == "" {
		pluginDir = libnetwork.DefaultPluginDir
	}
	stopped := make(chan struct{})
	wait = func() { <-stopped }
	if dockerHost == "none" {
		close(stopped)
		return wait
	}
	sock, err := docker.SocketFromHost(dockerHost)
	if err != nil {
		log.Error("Docker integration off", "err", err)
		close(stopped)
		return wait
	}
	if _, err := os.Stat(sock); err != nil && !o.Libnetwork {
		log.Info("no Docker engine on this host; Docker integration off", "socket", sock)
		close(stopped)
		return wait
	}
	go func() {
		defer close(stopped)
		c, err := connectWhenRegistered(ctx, ds, name)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("Docker integration off", "err", err)
			}
			return
		}
		defer c.Close()
		engine := docker.NewEngineAt(sock)
		done := make(chan struct{})
		if o.Libnetwork {
			drivers := libnetwork.New(c, name, engine, log)
			// Before serving: what the engine removed while we were down
			// never reached us, and must not stay routed or assigned.
			if removed, err := drivers.Reconcile(ctx); err != nil {
				log.Warn("libnetwork endpoints not reconciled", "err", err)
			} else if len(removed) > 0 {
				log.Info("removed what the engine no longer has", "removed", removed)
			}
			go func() {
				defer close(done)
				defer drivers.Close() // before the client closes
				if err := drivers.Serve(ctx, pluginDir); err != nil {
					log.Error("Docker plugins stopped", "err", err)
				}
			}()
		} else {
			close(done)
		}
		go keepForwarding(ctx, log)
		w := &dockerwatch.Watcher{C: c, Node: name, Engine: engine, Log: log}
		w.Run(ctx)
		<-done
	}()
	return wait
}

// connectWhenRegistered returns a client once the node record exists.
func connectWhenRegistered(ctx context.Context, ds datastore.Config, name string) (*client.Client, error) {
	var c *client.Client
	for {
		var err error
		if c == nil {
			if dsc, cerr := datastore.Connect(ctx, ds); cerr == nil {
				c = client.New(dsc)
			} else {
				err = cerr
			}
		}
		if c != nil {
			if _, err = c.Node(ctx, name); err == nil {
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			if c != nil {
				c.Close()
			}
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// keepForwarding makes sure the engine's iptables FORWARD policy does not
// drop workload traffic, now and after the engine restarts (it recreates
// its chains then).
func keepForwarding(ctx context.Context, log *slog.Logger) {
	for {
		changed, err := dockerfwd.Ensure(ctx)
		if err != nil && ctx.Err() == nil {
			log.Warn("cannot open the engine's iptables FORWARD chain to workload traffic; it may be dropped", "err", err)
		}
		if len(changed) > 0 {
			log.Info("accepting workload traffic in the engine's iptables FORWARD path (policy is ours, in table inet calico)", "chains", changed)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}
