package datastore

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEnsureTLSKeepsWhatItMade: a rerun keeps the CA and certificates; a
// new address gets a new member certificate from the same CA; keys are 0600.
func TestEnsureTLSKeepsWhatItMade(t *testing.T) {
	dir := t.TempDir()
	f, err := EnsureTLS(dir, []string{"127.0.0.1", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ca, srv, cli := read(f.CA), read(f.ServerCert), read(f.ClientCert)
	if _, err := EnsureTLS(dir, []string{"10.0.0.1", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, read(f.CA)) || !bytes.Equal(srv, read(f.ServerCert)) || !bytes.Equal(cli, read(f.ClientCert)) {
		t.Errorf("a rerun changed the files")
	}
	if _, err := EnsureTLS(dir, []string{"127.0.0.1", "10.0.0.9"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca, read(f.CA)) || bytes.Equal(srv, read(f.ServerCert)) || !bytes.Equal(cli, read(f.ClientCert)) {
		t.Errorf("a new address must change the member certificate only")
	}
	cert, err := readCert(f.ServerCert)
	if err != nil || !names(cert, []string{"10.0.0.9", "127.0.0.1"}) {
		t.Errorf("member certificate does not name the new address: %v", err)
	}
	for _, k := range []string{f.CAKey, f.ServerKey, f.ClientKey} {
		if fi, err := os.Stat(k); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", k, fi.Mode().Perm(), err)
		}
	}
	// Half a CA (the key not copied) is refused with what to do.
	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "tls"), 0o700)
	os.WriteFile(filepath.Join(other, "tls", "ca.pem"), ca, 0o644)
	if _, err := EnsureTLS(other, []string{"127.0.0.1"}); err == nil {
		t.Errorf("a CA certificate without its key was accepted")
	}
}

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
		cfg ServerConfig
		srv *Server
	}
	ms := []*member{{}, {}}
	var ic string
	for i, m := range ms {
		m.cfg = ServerConfig{Name: fmt.Sprintf("m%d", i+1), DataDir: t.TempDir(), TLS: true,
			ClientAddr: fmt.Sprintf("127.0.0.1:%d", port()), PeerAddr: fmt.Sprintf("127.0.0.1:%d", port())}
		if i > 0 {
			os.MkdirAll(filepath.Join(m.cfg.DataDir, "tls"), 0o700)
			for _, f := range []string{"ca.pem", "ca-key.pem"} {
				b, _ := os.ReadFile(filepath.Join(ms[0].cfg.DataDir, "tls", f))
				os.WriteFile(filepath.Join(m.cfg.DataDir, "tls", f), b, 0o600)
			}
		}
		if _, err := EnsureTLS(m.cfg.DataDir, m.cfg.TLSHosts()); err != nil {
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
	if _, err := StartServer(bad, time.Second); err == nil {
		t.Fatal("an http:// peer URL was accepted with TLS")
	}
	errs := make(chan error, len(ms))
	for _, m := range ms {
		m.cfg.InitialCluster = ic
		go func() {
			var err error
			m.srv, err = StartServer(m.cfg, 30*time.Second)
			errs <- err
		}()
	}
	for range ms {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f := TLSFilesIn(ms[0].cfg.DataDir)
	var clients []*Client
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
		c, err := Connect(ctx, Config{Endpoints: []string{"https://" + m.cfg.ClientAddr}, CAFile: f.CA, CertFile: f.ClientCert, KeyFile: f.ClientKey})
		if err != nil {
			t.Fatalf("member %d with the first member's client certificate: %v", i+1, err)
		}
		clients = append(clients, c)
	}
	if err := clients[0].Put(ctx, Root+"test", "via m1"); err != nil {
		t.Fatal(err)
	}
	if v, _, err := Get[string](ctx, clients[1], Root+"test"); err != nil || v != "via m1" {
		t.Fatalf("read through m2 (replicated over the TLS peer link): %q %v", v, err)
	}
}
