package wireguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key files under the agent's state directory. The private key is made on
// this host and never leaves it: mode 0600, read by nobody but the agent.
const (
	keyFile      = "wireguard.key"      // base64 private key
	rotationFile = "wireguard.rotation" // the cluster rotation count the key was made for
)

// LoadOrCreateKey returns this host's private key from dir, making one on
// first use, or a new one when the cluster's rotation count (calicoctl
// encryption rotate) is past the one the key was made for. The key
// survives restarts, so peers need not relearn it.
func LoadOrCreateKey(dir string, rotation int) (wgtypes.Key, error) {
	path := filepath.Join(dir, keyFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key directory: %w", err)
	}
	made := 0
	if b, err := os.ReadFile(filepath.Join(dir, rotationFile)); err == nil {
		made, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil && made >= rotation:
		fi, serr := os.Stat(path)
		if serr == nil && fi.Mode().Perm()&0o077 != 0 {
			return wgtypes.Key{}, fmt.Errorf("WireGuard private key %s is readable by others (mode %v): chmod 600 it, or delete it and run `calicoctl encryption rotate`", path, fi.Mode().Perm())
		}
		k, perr := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if perr != nil {
			return wgtypes.Key{}, fmt.Errorf("WireGuard private key %s does not parse (%v): delete it and the agent makes a new one", path, perr)
		}
		return k, nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return wgtypes.Key{}, fmt.Errorf("read WireGuard private key: %w", err)
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	// Write beside, then rename: a crash never leaves half a key.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(k.String()+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write WireGuard private key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write WireGuard private key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, rotationFile), []byte(strconv.Itoa(rotation)+"\n"), 0o600); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write WireGuard rotation count: %w", err)
	}
	return k, nil
}
