// Package etcdserver runs an embedded etcd member (`calicoctl datastore
// run`, tests). It is apart from package datastore so that the clients
// (calicoctl's other commands, the CNI plugins, which a runtime starts for
// every container) do not link etcd's server: its package initialisation
// alone doubled the CPU time of a plugin call.
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/calico-go/calico/internal/datastore"
)

// Config describes one member of an embedded etcd cluster.
type Config struct {
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
	// TLS uses the files EnsureTLS made under DataDir/tls, with client
	// certificates required (it sets the four fields below).
	TLS bool
	// TLS for clients and peers alike; all empty means plain HTTP. Peers
	// use the same certificate both as servers and as clients of each
	// other, so it must allow both uses, and TrustedCAFile (when set) must
	// have signed every member's certificate.
	CertFile, KeyFile, TrustedCAFile string
	ClientCertAuth                   bool
	LogLevel                         string // default "error": etcd is chatty
}

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
		cfg.PeerAddr = DefaultPeerAddr(cfg.ClientAddr)
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

// DefaultPeerAddr is the peer address of a member listening for clients on
// clientAddr: the same host, port 2380 (or the client port + 1 when the
// client port is not 2379).
func DefaultPeerAddr(clientAddr string) string {
	host, port, err := net.SplitHostPort(clientAddr)
	if err != nil {
		return ""
	}
	p, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(datastore.PeerPort(p)))
}

// TLSHosts are the names a member's certificate must carry: its client and
// peer addresses and the loopback names, so clients on the member's own
// host can use 127.0.0.1 or localhost.
func (cfg Config) TLSHosts() []string {
	hosts := []string{"127.0.0.1", "::1", "localhost"}
	peer := cfg.PeerAddr
	if peer == "" {
		peer = DefaultPeerAddr(cfg.ClientAddr)
	}
	for _, a := range []string{cfg.ClientAddr, peer} {
		h, _, err := net.SplitHostPort(a)
		if err != nil || h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			continue
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}
