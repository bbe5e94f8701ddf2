// Command calico-node is the per-host agent: it keeps this host's routes,
// tunnels, policy and BGP sessions converged to the datastore.
// Users start it with `calicoctl node --ip=HOST_IP`.

// Plain TCP for BGP: MPTCP listeners reject the TTL and MD5 socket options.
//
//go:debug multipathtcp=0
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/calico-go/calico/internal/agent"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/options"
)

func main() {
	args, managed := os.Args[1:], false
	if len(args) > 0 {
		var err error
		switch args[0] {
		case "plugin-front":
			if err := runFront(args[1:]); err != nil {
				fmt.Fprintln(os.Stderr, "error: "+err.Error())
				os.Exit(1)
			}
			return
		case "managed-plugin":
			if args, err = managedArgs(args[1:]); err != nil {
				fmt.Fprintln(os.Stderr, "error: "+err.Error())
				os.Exit(2)
			}
			managed = true
		}
	}
	o := options.NewNode()
	fs := pflag.NewFlagSet("calico-node", pflag.ContinueOnError)
	endpoints := fs.String("etcd-endpoints", "", options.EtcdEndpointsHelp)
	o.AddFlags(fs)
	fs.Usage = func() {} // a bad flag is one line below, not the whole list
	if err := fs.Parse(args); errors.Is(err, pflag.ErrHelp) {
		fmt.Print("Usage: calico-node --ip=HOST_IP [flags]\n(users start it with `calicoctl node`, which takes the same flags)\n\n" + fs.FlagUsages())
		return
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "error: %v; see `calico-node --help`\n", err)
		os.Exit(2)
	}
	level := slog.LevelInfo
	if o.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	stopProfile := startCPUProfile(log)
	err := run(log, o, *endpoints, managed)
	stopProfile()
	if err != nil {
		log.Error("calico-node stopped", "err", err)
		fmt.Fprintln(os.Stderr, "error: "+err.Error())
		os.Exit(1)
	}
}

func run(log *slog.Logger, o *options.Node, endpoints string, managed bool) error {
	name, err := o.NodeName()
	if err != nil {
		return err
	}
	v, err := o.Validate()
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Name: name, IP: v.IP, IP6: v.IP6, ASN: v.ASN,
		Datastore: datastore.ConfigFromEnv(endpoints), BGPPort: int32(o.BGPPort),
		HoldTime: o.HoldTime, GracefulRestartTime: o.RestartTime,
		WorkloadToHost: v.ToHost, WorkloadToControlPlane: v.ToControlPlane,
		ResyncInterval: o.ResyncInterval, SweepGrace: o.SweepGrace, Log: log,
		StateDir:       privateDir(name),
		RouteReflector: o.RouteReflector, ClusterID: v.ClusterID, PublishPorts: v.PublishPorts,
		PrometheusListen: v.Prometheus,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting calico-node", "name", name, "ip", o.IP, "datastore", cfg.Datastore.Endpoints)
	if !managed {
		if err := ensureFront(name, o); err != nil {
			return err
		}
	}
	dockerStopped, dockerProblems := startDocker(ctx, log, name, cfg.Datastore, o, managed)
	cniStopped := startCNI(ctx, log, name, cfg.Datastore)
	cfg.MoreProblems = dockerProblems
	err = agent.Run(ctx, cfg)
	stop()
	dockerStopped()
	cniStopped()
	return err
}

// privateDir is where this node keeps files that never leave the host (its
// WireGuard private key): /var/lib/calico/NAME, or under CALICO_STATE_DIR
// beside the pid and log trees calicoctl places there.
func privateDir(name string) string {
	if d := os.Getenv("CALICO_STATE_DIR"); d != "" {
		return filepath.Join(d, "lib", "calico", name)
	}
	return filepath.Join("/var/lib/calico", name)
}
