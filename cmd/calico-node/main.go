// Command calico-node is the per-host agent: it keeps this host's routes,
// tunnels, policy and BGP sessions converged to the datastore.
// Users start it with `calicoctl node --ip=HOST_IP`.

// Plain TCP for BGP: MPTCP listeners reject the TTL and MD5 socket options.
//
//go:debug multipathtcp=0
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/dataplane/nft"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/node"
)

func main() {
	var (
		name      = flag.String("name", os.Getenv("CALICO_NODENAME"), "node name")
		ip        = flag.String("ip", "", "this host's IPv4 address")
		ip6       = flag.String("ip6", "", "this host's IPv6 address")
		as        = flag.String("as", "", "AS number (default: the cluster default)")
		endpoints = flag.String("etcd-endpoints", "", "etcd URLs (default: ETCD_ENDPOINTS, ETCD_AUTHORITY, 127.0.0.1:2379)")
		bgpPort   = flag.Int("bgp-port", 0, "BGP port (default 179)")
		holdTime  = flag.Duration("bgp-hold-time", 0, "BGP hold time: how fast a lost host's routes are withdrawn (default 90s)")
		grTime    = flag.Duration("bgp-restart-time", 0, "BGP graceful restart time: how long peers keep this host's routes while its agent restarts, also after the hold time expires (default 120s; negative disables)")
		toHost    = flag.String("workload-to-host", "drop", "what workloads may send to this host's own services: drop (nothing), or policy (their outbound profile rules decide)")
		resync    = flag.Duration("resync-interval", 30*time.Second, "full reconcile of the kernel state")
		debug     = flag.Bool("debug", false, "debug logging")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	hostAccess, err := nft.ParseHostAccess(*toHost)
	if err == nil {
		err = run(log, *name, *ip, *ip6, *as, *endpoints, *bgpPort, *holdTime, *grTime, hostAccess, *resync)
	}
	if err != nil {
		log.Error("calico-node stopped", "err", err)
		fmt.Fprintln(os.Stderr, "error: "+err.Error())
		os.Exit(1)
	}
}

func run(log *slog.Logger, name, ip, ip6, as, endpoints string, bgpPort int, hold, grTime time.Duration, toHost nft.HostAccess, resync time.Duration) error {
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		name = h
	}
	cfg := node.Config{Name: name, Datastore: datastore.ConfigFromEnv(endpoints), BGPPort: int32(bgpPort), HoldTime: hold, GracefulRestartTime: grTime, WorkloadToHost: toHost, ResyncInterval: resync, Log: log, StateDir: privateDir(name)}
	var err error
	if cfg.IP, err = netip.ParseAddr(ip); err != nil || !cfg.IP.Is4() {
		return fmt.Errorf("--ip: want this host's IPv4 address, got %q", ip)
	}
	if ip6 != "" {
		if cfg.IP6, err = netip.ParseAddr(ip6); err != nil || cfg.IP6.Is4() {
			return fmt.Errorf("--ip6: want this host's IPv6 address, got %q", ip6)
		}
	}
	if as != "" {
		if cfg.ASN, err = api.ParseASNumber(as); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting calico-node", "name", name, "ip", ip, "datastore", cfg.Datastore.Endpoints)
	dockerStopped := startDocker(ctx, log, name, cfg.Datastore)
	err = node.Run(ctx, cfg)
	stop()
	dockerStopped()
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
