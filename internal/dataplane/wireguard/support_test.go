package wireguard

import (
	"log/slog"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestSupportFollowsTheKey: the public key calc is given is the current
// key's, also after the key changes.
func TestSupportFollowsTheKey(t *testing.T) {
	t.Setenv("CALICO_WIREGUARD", "userspace")
	m := New(slog.New(slog.DiscardHandler))
	if s := m.Support(); s.PublicKey != "" {
		t.Fatalf("without a key, Support published %q", s.PublicKey)
	}
	for range 2 {
		k, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		m.SetKey(k)
		want := k.PublicKey().String()
		if got := m.Support().PublicKey; got != want {
			t.Fatalf("Support published %q, want %q", got, want)
		}
		if got := m.PublicKey(); got != want {
			t.Fatalf("PublicKey = %q, want %q", got, want)
		}
	}
}

// BenchmarkSupport is what every computation of the agent's desired state
// asks of the manager.
func BenchmarkSupport(b *testing.B) {
	b.Setenv("CALICO_WIREGUARD", "userspace")
	m := New(slog.New(slog.DiscardHandler))
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		b.Fatal(err)
	}
	m.SetKey(k)
	b.ReportAllocs()
	for b.Loop() {
		if m.Support().PublicKey == "" {
			b.Fatal("no key")
		}
	}
}
