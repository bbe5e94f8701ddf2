package datastore

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
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
