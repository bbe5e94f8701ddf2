package libnetwork

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unixClient talks HTTP to one unix socket, as the engine does to a plugin.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

func post(t *testing.T, c *http.Client, method string) (int, string, time.Duration) {
	t.Helper()
	begin := time.Now()
	resp, err := c.Post("http://plugin/"+method, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), time.Since(begin)
}

// serveBackend answers every call on path with body, as the agent would.
func serveBackend(t *testing.T, path, body string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body+" "+r.URL.Path)
	})}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
}

func waitSocket(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s", path)
		}
	}
}

// TestFrontAnswersAtOnceAndForwards: with no agent, the front answers the
// handshake itself and every call with "not running" at once (the engine
// otherwise waits 15-60 s on a missing socket); with the agent's socket
// there, calls reach it.
func TestFrontAnswersAtOnceAndForwards(t *testing.T) {
	dir := t.TempDir()
	f := FrontFiles{Backend: filepath.Join(dir, "b"), AgentPID: filepath.Join(dir, "calico-node.pid"), PluginDir: filepath.Join(dir, "p")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunFront(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", f) }()
	sock := filepath.Join(f.PluginDir, "calico.sock")
	waitSocket(t, sock)
	c := unixClient(sock)

	if code, body, _ := post(t, c, "Plugin.Activate"); code != 200 || body != `{"Implements":["NetworkDriver"]}` {
		t.Errorf("activate: %d %s", code, body)
	}
	code, body, took := post(t, c, "NetworkDriver.CreateNetwork")
	if code != 500 || !strings.Contains(body, "calico-node n1 is not running on this host") || took > time.Second {
		t.Errorf("with no agent: %d %s after %v; want 500, not running, at once", code, body, took)
	}
	serveBackend(t, filepath.Join(f.Backend, "calico.sock"), "agent")
	if code, body, _ := post(t, c, "NetworkDriver.CreateNetwork"); code != 200 || body != "agent /NetworkDriver.CreateNetwork" {
		t.Errorf("with the agent: %d %s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("%s stays after the front stopped", sock)
	}
}

// TestServeManagedRoutesBothDrivers: a managed plugin's one socket
// declares both drivers and sends each driver's calls to its own backend.
func TestServeManagedRoutesBothDrivers(t *testing.T) {
	dir := t.TempDir()
	backend := filepath.Join(dir, "b")
	serveBackend(t, filepath.Join(backend, "calico.sock"), "network")
	serveBackend(t, filepath.Join(backend, "calico-ipam.sock"), "ipam")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock := filepath.Join(dir, "calico.sock")
	go ServeManaged(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), "n1", sock, backend)
	waitSocket(t, sock)
	c := unixClient(sock)
	for method, want := range map[string]string{
		"Plugin.Activate":               `{"Implements":["NetworkDriver","IpamDriver"]}`,
		"NetworkDriver.Join":            "network /NetworkDriver.Join",
		"IpamDriver.RequestAddress":     "ipam /IpamDriver.RequestAddress",
		"IpamDriver.GetCapabilities":    "ipam /IpamDriver.GetCapabilities",
		"NetworkDriver.GetCapabilities": "network /NetworkDriver.GetCapabilities",
	} {
		if code, body, _ := post(t, c, method); code != 200 || body != want {
			t.Errorf("%s: %d %q, want %q", method, code, body, want)
		}
	}
}
