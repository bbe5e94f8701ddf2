package wireguard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyMadeOnceKeptAndRotated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "host1")
	k1, err := LoadOrCreateKey(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	if k, err := LoadOrCreateKey(dir, 0); err != nil || k != k1 {
		t.Fatalf("second load made a new key (%v)", err)
	}
	k2, err := LoadOrCreateKey(dir, 1)
	if err != nil || k2 == k1 {
		t.Fatalf("rotation 1 kept the old key (%v)", err)
	}
	if k, err := LoadOrCreateKey(dir, 1); err != nil || k != k2 {
		t.Fatalf("a restart after the rotation made another key (%v)", err)
	}
	// A key others can read is refused, not used.
	if err := os.Chmod(filepath.Join(dir, keyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir, 1); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable key was accepted: %v", err)
	}
}
