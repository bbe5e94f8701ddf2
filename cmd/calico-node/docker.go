package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/spf13/pflag"
	"log/slog"
	"os"
	"sync/atomic"
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
// has stopped (after ctx ends), so the plugin sockets are gone on exit;
// problems tells what the watcher could not do, for the node's status.
func startDocker(ctx context.Context, log *slog.Logger, name string, ds datastore.Config, o *options.Node, managed bool) (wait func(), problems func() []string) {
	var watcher atomic.Pointer[dockerwatch.Watcher]
	var plugins atomic.Pointer[libnetwork.Drivers]
	problems = func() (out []string) {
		if w := watcher.Load(); w != nil {
			out = w.Problems()
		}
		if d := plugins.Load(); d != nil {
			out = append(out, d.Problems()...)
		}
		return out
	}
	dockerHost := o.DockerHost
	if dockerHost == "" {
		dockerHost = os.Getenv("DOCKER_HOST")
	}
	stopped := make(chan struct{})
	wait = func() { <-stopped }
	if dockerHost == "none" {
		close(stopped)
		return wait, problems
	}
	sock, err := docker.SocketFromHost(dockerHost)
	if err != nil {
		log.Error("Docker integration off", "err", err)
		close(stopped)
		return wait, problems
	}
	if _, err := os.Stat(sock); err != nil && !o.Libnetwork {
		log.Info("no Docker engine on this host; Docker integration off", "socket", sock)
		close(stopped)
		return wait, problems
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
			backend := libnetwork.Front(name, o.PluginDir).Backend
			if managed {
				drivers.DriverName = managedName()
				go func() {
					socket := filepath.Join(o.PluginDir, libnetwork.NetworkDriverName+".sock")
					if err := libnetwork.ServeManaged(ctx, log, name, socket, backend); err != nil {
						log.Error("managed Docker plugin stopped", "err", err)
					}
				}()
			}
			plugins.Store(drivers)
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
				if err := drivers.Serve(ctx, backend); err != nil {
					log.Error("Docker plugins stopped", "err", err)
				}
			}()
		} else {
			close(done)
		}
		go keepForwarding(ctx, log)
		w := &dockerwatch.Watcher{C: c, Node: name, Engine: engine, Log: log}
		watcher.Store(w)
		w.Run(ctx)
		<-done
	}()
	return wait, problems
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

// ensureFront starts the process that serves the engine's plugin sockets
// and forwards to ours, before the agent reports ready: `calicoctl node
// --libnetwork` returns with the sockets there.
func ensureFront(name string, o *options.Node) error {
	if !o.Libnetwork || o.DockerHost == "none" {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	f := libnetwork.Front(name, o.PluginDir)
	return libnetwork.EnsureFront(f, []string{self, "plugin-front", "--node", name, "--plugin-dir", f.PluginDir})
}

// runFront is `calico-node plugin-front`: the engine's plugin sockets,
// forwarded to the agent while it runs (see libnetwork.RunFront).
func runFront(args []string) error {
	fs := pflag.NewFlagSet("calico-node plugin-front", pflag.ContinueOnError)
	node := fs.String("node", "", "the node whose agent the calls go to")
	dir := fs.String("plugin-dir", libnetwork.DefaultPluginDir, "where the engine looks for plugin sockets")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("plugin-front needs --node")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "plugin-front")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return libnetwork.RunFront(ctx, log, *node, libnetwork.Front(*node, *dir))
}

// Settings of the managed plugin (`docker plugin set calico NAME=VALUE`).
const (
	envPluginIP   = "CALICO_IP"        // the host's IPv4 address: --ip
	envPluginIP6  = "CALICO_IP6"       // --ip6
	envPluginArgs = "CALICO_NODE_ARGS" // more calico-node flags, space-separated
	envPluginName = "CALICO_PLUGIN_NAME"
)

// managedArgs turns the managed plugin's settings into calico-node's
// flags. The engine starts the plugin with a fixed entrypoint; the engine's
// socket and the plugin socket's directory are where the plugin's
// config.json puts them.
func managedArgs(extra []string) ([]string, error) {
	ip := os.Getenv(envPluginIP)
	if ip == "" {
		return nil, fmt.Errorf("the plugin needs the host's address: docker plugin set calico %s=HOST_IP", envPluginIP)
	}
	args := []string{"--ip=" + ip, "--libnetwork", "--docker-host=unix://" + libnetwork.ManagedEngineSocket, "--plugin-dir=" + libnetwork.DefaultPluginDir}
	if ip6 := os.Getenv(envPluginIP6); ip6 != "" {
		args = append(args, "--ip6="+ip6)
	}
	args = append(args, strings.Fields(os.Getenv(envPluginArgs))...)
	// The engine mounts /proc/sys read-only in a plugin, but the agent
	// sets its interfaces' sysctls (proxy ARP, forwarding) in the host's
	// network namespace, which the plugin shares; CAP_SYS_ADMIN lets it
	// lift that.
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("make /proc/sys writable (the plugin needs CAP_SYS_ADMIN): %w", err)
	}
	return append(args, extra...), nil
}

// managedName is the plugin's name in the engine, which names its networks'
// driver by it.
func managedName() string {
	if n := os.Getenv(envPluginName); n != "" {
		return n
	}
	return libnetwork.NetworkDriverName + ":latest"
}
