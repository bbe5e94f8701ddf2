package libnetwork

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/datastore"
)

// snapshot is every key and value under the project's root.
func snapshot(t *testing.T, p pair) map[string]string {
	t.Helper()
	r, _, err := p.c.DS.Read(context.Background(), datastore.ReadPrefix(datastore.Root))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range r[0] {
		m[kv.Key] = string(kv.Value)
	}
	return m
}

// Hostile and malformed calls to the plugin sockets: each gets an error
// answer (or a harmless success), the server stays up, and the datastore
// is as it was.
func TestHostilePluginCalls(t *testing.T) {
	p := setup(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.h1.Serve(ctx, dir) }()
	t.Cleanup(func() {
		cancel()
		<-served
	})
	sock := func(name string) string { return filepath.Join(dir, name+".sock") }
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(sock(IPAMDriverName)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plugin sockets did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{NetworkDriverName, IPAMDriverName} {
		fi, err := os.Stat(sock(name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o007 != 0 {
			t.Errorf("%s.sock is open to others: %v", name, fi.Mode())
		}
	}
	// A network to aim at, made before the snapshot.
	if err := (NetworkDriver{p.h1}).CreateNetwork(createReq("n1-host1", "192.168.7.0/24", AddressSpace, nil)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, p)

	post := func(driver, path, body string) (int, string) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock(driver))
			}}}
		resp, err := c.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s %s: %v", driver, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	huge := `{"PoolID":"` + strings.Repeat("A", 1<<20) + `"}`
	cases := []struct {
		driver, path, body string
		wantErr            bool // the answer must carry an Err
	}{
		{IPAMDriverName, "/IpamDriver.RequestAddress", `not json`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":"../../etc/passwd"}`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":"192.168.7.0/24","Address":"999.1.1.1"}`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":"192.168.7.0/24","Address":"10.1.1.1"}`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":"10.99.0.0/24"}`, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", huge, true},
		{IPAMDriverName, "/IpamDriver.RequestAddress", `{"PoolID":42}`, true},
		{IPAMDriverName, "/IpamDriver.RequestPool", `{"Pool":"192.168.7.0/33"}`, true},
		{IPAMDriverName, "/IpamDriver.RequestPool", `{"Pool":"::/0","V6":false}`, true},
		{IPAMDriverName, "/IpamDriver.RequestPool", `{"Pool":"192.168.9.0/24","Options":{"x":"y"}}`, true},
		{IPAMDriverName, "/IpamDriver.ReleaseAddress", `{"PoolID":"192.168.7.0/24","Address":"bogus"}`, true},
		{IPAMDriverName, "/IpamDriver.ReleaseAddress", `{"PoolID":"192.168.7.0/24","Address":"192.168.7.200"}`, false},
		{NetworkDriverName, "/NetworkDriver.CreateNetwork", `[]`, true},
		{NetworkDriverName, "/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"not-a-cidr"}]}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"0.0.0.0/0"}]}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateNetwork", `{"NetworkID":"x","Options":{"com.docker.network.generic":{"ipip":"true; rm -rf /"}},"IPv4Data":[{"Pool":"192.168.9.0/24"}]}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateNetwork", `{"NetworkID":"x","IPv4Data":[{"AddressSpace":"CalicoLocal","Pool":"127.0.0.0/8"}]}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1-host1","EndpointID":"e1"}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateEndpoint", `{"NetworkID":"n1-host1","EndpointID":"e1","Interface":{"Address":"garbage"}}`, true},
		{NetworkDriverName, "/NetworkDriver.CreateEndpoint", `{"NetworkID":"nope","EndpointID":"e1","Interface":{"Address":"192.168.7.9/32"}}`, true},
		{NetworkDriverName, "/NetworkDriver.Join", `{"NetworkID":"n1-host1","EndpointID":"never-created","SandboxKey":"/proc/1/ns/net"}`, true},
		{NetworkDriverName, "/NetworkDriver.Leave", `{"NetworkID":"n1-host1","EndpointID":"never-created"}`, false},
		{NetworkDriverName, "/NetworkDriver.DeleteEndpoint", `{"NetworkID":"n1-host1","EndpointID":"never-created"}`, false},
		{NetworkDriverName, "/NetworkDriver.DeleteNetwork", `{"NetworkID":"never-created"}`, false},
		{NetworkDriverName, "/NetworkDriver.AllocateNetwork", `{"NetworkID":"x"}`, true},
		{NetworkDriverName, "/NetworkDriver.Nonsense", `{}`, true},
	}
	for _, c := range cases {
		status, body := post(c.driver, c.path, c.body)
		var answer struct{ Err string }
		_ = json.Unmarshal([]byte(body), &answer)
		gotErr := status != http.StatusOK || answer.Err != ""
		if gotErr != c.wantErr {
			t.Errorf("%s %.80s: status %d, answer %.200s; want error=%v", c.path, c.body, status, body, c.wantErr)
		}
	}
	// Still serving, and nothing changed.
	if status, body := post(IPAMDriverName, "/IpamDriver.GetCapabilities", `{}`); status != http.StatusOK {
		t.Errorf("server no longer answers: %d %s", status, body)
	}
	after := snapshot(t, p)
	if len(before) != len(after) {
		t.Errorf("datastore changed: %d keys before, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v && !strings.HasPrefix(k, datastore.PrefixStatus) {
			t.Errorf("key %s changed:\n before %s\n after  %s", k, v, after[k])
		}
	}
	t.Logf("FIGURE: %d hostile plugin calls, server up, datastore unchanged (%d keys)", len(cases), len(after))
}
