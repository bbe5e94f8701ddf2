package datastore

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// ServerConfig describes one member of an embedded etcd cluster.
type ServerConfig struct {
	Name    string // member name; "default" when empty
	DataDir string
	// ClientAddr and PeerAddr are host:port. PeerAddr defaults to the client
	// host with port 2380 (or client port + 1 when the client port is not 2379).
	ClientAddr string
	PeerAddr   string
	// InitialCluster is "name=http://ip:port,..." for a multi-member cluster;
	// empty means a cluster of this member alone.
	InitialCluster string
	// Join marks a member added to a running cluster (initial-cluster-state existing).
	Join bool
	// TLS for clients; all empty means plain HTTP.
	CertFile, KeyFile, TrustedCAFile string
	ClientCertAuth                   bool
	LogLevel                         string // default "error": etcd is chatty
}

// Server is a running embedded etcd member.
type Server struct {
	etcd      *embed.Etcd
	ClientURL string
}

// StartServer starts an etcd member and returns once it serves clients, or
// fails within timeout.
func StartServer(cfg ServerConfig, timeout time.Duration) (*Server, error) {
	host, port, err := net.SplitHostPort(cfg.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("bad listen address %q: want IP:PORT", cfg.ClientAddr)
	}
	if cfg.PeerAddr == "" {
		p, _ := strconv.Atoi(port)
		cfg.PeerAddr = net.JoinHostPort(host, strconv.Itoa(PeerPort(p)))
	}
	scheme := "http"
	if cfg.CertFile != "" {
		scheme = "https"
	}
	clientURL := url.URL{Scheme: scheme, Host: cfg.ClientAddr}
	peerURL := url.URL{Scheme: "http", Host: cfg.PeerAddr}

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

// Err reports a fatal server error.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

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
