package datastore

import (
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/pflag"
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

// AddFlags defines the flags of `calicoctl datastore start`, which passes
// them on to `calico-node datastore-run`, and timeout: how long to wait for
// the member to serve.
func (cfg *ServerConfig) AddFlags(fs *pflag.FlagSet, timeout *time.Duration) {
	fs.StringVar(&cfg.ClientAddr, "listen", "127.0.0.1:2379", "client address IP:PORT")
	fs.StringVar(&cfg.PeerAddr, "peer-listen", "", "peer address IP:PORT (default: client IP, port 2380)")
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/calico/etcd", "data directory")
	fs.StringVar(&cfg.Name, "name", "", "member name (for a cluster)")
	fs.StringVar(&cfg.InitialCluster, "initial-cluster", "", "name=http://IP:PEERPORT,... for a multi-member cluster")
	fs.BoolVar(&cfg.Join, "join", false, "join an existing cluster (initial-cluster-state existing)")
	fs.StringVar(&cfg.CertFile, "cert-file", "", "TLS certificate for clients")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "TLS key for clients")
	fs.StringVar(&cfg.TrustedCAFile, "ca-file", "", "CA that client certificates must chain to")
	fs.BoolVar(&cfg.ClientCertAuth, "client-cert-auth", false, "require client certificates")
	fs.BoolVar(&cfg.TLS, "tls", false, "TLS for clients and peers with certificates made (once) in DATA_DIR/tls, client certificates required; prints the environment clients need")
	fs.DurationVar(timeout, "timeout", 30*time.Second, "how long to wait for the datastore to serve")
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
	return net.JoinHostPort(host, strconv.Itoa(PeerPort(p)))
}

// TLSHosts are the names a member's certificate must carry: its client and
// peer addresses and the loopback names, so clients on the member's own
// host can use 127.0.0.1 or localhost.
func (cfg ServerConfig) TLSHosts() []string {
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
