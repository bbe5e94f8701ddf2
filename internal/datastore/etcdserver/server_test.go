package etcdserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/datastore"
)

// TestTLSClusterWithSharedCA: two members started with TLS, the second
// with the first's CA copied into its data directory, form a cluster over
// TLS peer connections, and one client certificate works with both.
func TestTLSClusterWithSharedCA(t *testing.T) {
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	type member struct {
		cfg Config
		srv *Server
	}
	ms := []*member{{}, {}}
	var ic string
	for i, m := range ms {
		m.cfg = Config{Name: fmt.Sprintf("m%d", i+1), DataDir: t.TempDir(), TLS: true,
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", port()), PeerAddr: fmt.Sprintf("127.0.0.1:%d", port())}
		if i > 0 {
			os.MkdirAll(filepath.Join(m.cfg.DataDir, "tls"), 0o700)
			for _, f := range []string{"ca.pem", "ca-key.pem"} {
				b, _ := os.ReadFile(filepath.Join(ms[0].cfg.DataDir, "tls", f))
				os.WriteFile(filepath.Join(m.cfg.DataDir, "tls", f), b, 0o600)
			}
		}
		if _, err := datastore.EnsureTLS(m.cfg.DataDir, m.cfg.TLSHosts()); err != nil {
			t.Fatal(err)
		}
		if ic != "" {
			ic += ","
		}
		ic += m.cfg.Name + "=https://" + m.cfg.PeerAddr
	}
	// A plain peer URL in a TLS cluster is refused before anything starts.
	bad := ms[0].cfg
	bad.InitialCluster = "m1=http://" + bad.PeerAddr
	if _, err := Start(bad, time.Second); err == nil {
		t.Fatal("an http:// peer URL was accepted with TLS")
	}
	errs := make(chan error, len(ms))
	for _, m := range ms {
		m.cfg.InitialCluster = ic
		go func() {
			var err error
			m.srv, err = Start(m.cfg, 30*time.Second)
			errs <- err
		}()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f := datastore.TLSFilesIn(ms[0].cfg.DataDir)
	var clients []*datastore.Client
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
		for _, m := range ms {
			m.srv.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, m := range ms {
		c, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{"https://" + m.cfg.ClientAddr}, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey})
		if err != nil {
			t.Fatalf("member %d with the first member's client certificate: %v", i+1, err)
		}
		clients = append(clients, c)
	}
	if err := clients[0].Put(ctx, datastore.Root+"test", "via m1"); err != nil {
		t.Fatal(err)
	}
	if v, _, err := datastore.Get[string](ctx, clients[1], datastore.Root+"test"); err != nil || v != "via m1" {
		t.Fatalf("read through m2 (replicated over the TLS peer link): %q %v", v, err)
	}
}
