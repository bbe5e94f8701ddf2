// Package etcdserver runs an embedded etcd member (`calico-node
// datastore-run`, which `calicoctl datastore start` starts; tests). It is apart from package datastore so that the clients
// (calicoctl's other commands, the CNI plugins, which a runtime starts for
// every container) do not link etcd's server: its package initialisation
// alone doubled the CPU time of a plugin call, and made 40% of the CPU
// time of every calicoctl command (20 -> 12 ms for `calicoctl --help`).
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/calico-go/calico/internal/datastore"
)

// Config describes one member: datastore.ServerConfig, which the programs
// that only start this one (calicoctl) can parse without linking it.
type Config = datastore.ServerConfig

// Server is a running embedded etcd member.
type Server struct {
	etcd      *embed.Etcd
	ClientURL string
}

// Start starts an etcd member and returns once it serves clients, or
// fails within timeout.
func Start(cfg Config, timeout time.Duration) (*Server, error) {
	if _, _, err := net.SplitHostPort(cfg.ClientAddr); err != nil {
		return nil, fmt.Errorf("bad listen address %q: want IP:PORT", cfg.ClientAddr)
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = datastore.DefaultPeerAddr(cfg.ClientAddr)
	}
	if cfg.TLS {
		if cfg.CertFile != "" || cfg.KeyFile != "" || cfg.TrustedCAFile != "" {
			return nil, errors.New("give either --tls (certificates made in the data directory) or --cert-file, --key-file and --ca-file, not both")
		}
		f := datastore.TLSFilesIn(cfg.DataDir)
		cfg.CertFile, cfg.KeyFile, cfg.TrustedCAFile, cfg.ClientCertAuth = f.ServerCert, f.ServerKey, f.CA, true
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("--cert-file and --key-file go together")
	}
	scheme := "http"
	if cfg.CertFile != "" {
		scheme = "https"
	}
	if err := checkInitialCluster(cfg.InitialCluster, scheme, cfg.TrustedCAFile); err != nil {
		return nil, err
	}
	// Peers speak TLS whenever clients do: a datastore whose clients need
	// certificates but whose peer port takes plain HTTP can be read and
	// written through the peer port (raft messages, /members) by anyone
	// who reaches it.
	clientURL := url.URL{Scheme: scheme, Host: cfg.ClientAddr}
	peerURL := url.URL{Scheme: scheme, Host: cfg.PeerAddr}

	ec := embed.NewConfig()
	if cfg.Name != "" {
		ec.Name = cfg.Name
	}
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	if cfg.InitialCluster != "" {
		ec.InitialCluster = cfg.InitialCluster
	} else {
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	}
	if cfg.Join {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	ec.LogLevel = cfg.LogLevel
	if ec.LogLevel == "" {
		ec.LogLevel = "error"
	}
	// Keep history bounded: watchers that fall behind re-list (see Syncer).
	ec.AutoCompactionMode = "revision"
	ec.AutoCompactionRetention = "10000"
	if cfg.CertFile != "" {
		ec.ClientTLSInfo.CertFile = cfg.CertFile
		ec.ClientTLSInfo.KeyFile = cfg.KeyFile
		ec.ClientTLSInfo.TrustedCAFile = cfg.TrustedCAFile
		ec.ClientTLSInfo.ClientCertAuth = cfg.ClientCertAuth
		ec.PeerTLSInfo.CertFile = cfg.CertFile
		ec.PeerTLSInfo.KeyFile = cfg.KeyFile
		ec.PeerTLSInfo.TrustedCAFile = cfg.TrustedCAFile
		// Members always prove themselves to each other when there is a
		// CA to check them against.
		ec.PeerTLSInfo.ClientCertAuth = cfg.TrustedCAFile != ""
		if cfg.TLS {
			ec.PeerTLSInfo.AllowedCNs = []string{datastore.MemberCN}
		}
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start etcd on %s: %w", cfg.ClientAddr, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd on %s failed: %w", cfg.ClientAddr, err)
	case <-time.After(timeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcd on %s not ready after %s (a multi-member cluster needs a quorum of members started)", cfg.ClientAddr, timeout)
	}
	return &Server{etcd: e, ClientURL: clientURL.String()}, nil
}

// Close stops the member. Close clients first, or shutdown waits for them.
func (s *Server) Close() { s.etcd.Close() }

// Wait blocks until ctx ends or the server fails.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.etcd.Err():
		return err
	}
}

// checkInitialCluster makes sure every member's peer URL speaks what this
// member's peers speak, and that a TLS cluster can check its members.
func checkInitialCluster(ic, scheme, ca string) error {
	if ic == "" {
		return nil
	}
	for _, m := range strings.Split(ic, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok {
			return fmt.Errorf("--initial-cluster entry %q: want NAME=%s://IP:PEERPORT", m, scheme)
		}
		if !strings.HasPrefix(u, scheme+"://") {
			if scheme == "https" {
				return fmt.Errorf("--initial-cluster: member %s has peer URL %s, but with TLS members speak TLS to each other: write https://", name, u)
			}
			return fmt.Errorf("--initial-cluster: member %s has peer URL %s; without TLS write http://", name, u)
		}
	}
	if scheme == "https" && ca == "" {
		return errors.New("a TLS cluster needs --ca-file (the CA that signed every member's certificate), so members can check each other")
	}
	return nil
}
