package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestDatastoreTLS: `calicoctl datastore start --tls` makes a CA, a member
// certificate and a client certificate, and prints the environment to
// export; with it the whole walkthrough (calicoctl on both hosts, both
// calico-nodes) runs over TLS and workloads reach each other across hosts.
// From host 2, a host on the fabric without the client certificate: a plain
// HTTP client, a TLS client without a certificate, a plain HTTP request to
// the peer port, and a TLS request to the peer port with the client
// certificate (not a member's) are all refused, and the datastore is
// unchanged. Keys are mode 0600, and a restart keeps the CA and the
// certificates, so the exported environment stays valid.
//
// Before: there was no --tls; with --cert-file and --client-cert-auth the
// peer URL was still http://, and `GET http://IP:2380/members` from any
// host answered with the member list (the raft endpoints alike).
func TestDatastoreTLS(t *testing.T) {
	w := world(t, walkthrough.Options{DatastoreTLS: true}, true)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	env := map[string]string{}
	for _, kv := range w.EtcdEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	tlsDir := filepath.Join(w.StateDir, "etcd", "tls")
	wantEnv := map[string]string{
		"ETCD_ENDPOINTS":    "https://" + w.Etcd,
		"ETCD_CA_CERT_FILE": filepath.Join(tlsDir, "ca.pem"),
		"ETCD_CERT_FILE":    filepath.Join(tlsDir, "client.pem"),
		"ETCD_KEY_FILE":     filepath.Join(tlsDir, "client-key.pem"),
	}
	for k, v := range wantEnv {
		if env[k] != v {
			t.Errorf("printed %s=%q, want %q (printed: %v)", k, env[k], v, w.EtcdEnv)
		}
	}

	// Honest traffic: the nodes read the datastore over TLS and route.
	honest := func(when string) int {
		w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
		var n int
		e2etest.WaitFor(t, 20*time.Second, "worker-1 reaches worker-3 "+when, func() (bool, string) {
			n = e2etest.PingReplies(ctx, w1.Netns, w1.IP, w3.IP, 3)
			return n > 0, fmt.Sprintf("%d replies", n)
		})
		return n
	}
	before := honest("over a TLS datastore")
	pools := ctl(t, ctx, w, h2, "pool", "show", "-o", "json")

	// The attacks, from host 2 without the client certificate.
	type attack struct {
		name string
		env  []string
		want string
	}
	for _, a := range []attack{
		{"plain HTTP client", []string{"ETCD_ENDPOINTS=http://" + w.Etcd}, "speaks TLS, not plain HTTP"},
		{"TLS client without a certificate", []string{"ETCD_ENDPOINTS=https://" + w.Etcd, "ETCD_CA_CERT_FILE=" + env["ETCD_CA_CERT_FILE"]}, "requires a client certificate"},
	} {
		start := time.Now()
		out, err := ctlOnlyEnv(ctx, h2, a.env, "pool", "add", "10.99.0.0/16")
		t.Logf("FIGURE: TLS datastore, %s: `pool add` exit %v after %s: %s", a.name, err != nil, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, a.want) {
			t.Errorf("%s: want a refusal saying %q, got %v: %s", a.name, a.want, err, out)
		}
	}
	peer := "10.0.0.1:2380"
	if body, err := nsHTTPGet(ctx, h2, "http://"+peer+"/members", nil); err == nil {
		t.Errorf("plain HTTP to the peer port answered: %s", body)
	} else {
		t.Logf("FIGURE: TLS datastore, plain HTTP GET /members on the peer port: %v", err)
	}
	if body, err := nsHTTPGet(ctx, h2, "http://"+w.Etcd+"/version", nil); err == nil {
		t.Errorf("plain HTTP to the client port answered: %s", body)
	}
	// TLS 1.2, so a refused client certificate fails the handshake itself.
	caPool := x509.NewCertPool()
	caPEM, err := os.ReadFile(env["ETCD_CA_CERT_FILE"])
	if err != nil || !caPool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA file %s: %v", env["ETCD_CA_CERT_FILE"], err)
	}
	noCert := &tls.Config{RootCAs: caPool, MaxVersion: tls.VersionTLS12}
	if body, err := nsHTTPGet(ctx, h2, "https://"+peer+"/members", noCert); err == nil {
		t.Errorf("TLS without a certificate to the peer port answered: %s", body)
	}
	clientCert, err := tls.LoadX509KeyPair(env["ETCD_CERT_FILE"], env["ETCD_KEY_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	withClientCert := &tls.Config{RootCAs: caPool, MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{clientCert}}
	if body, err := nsHTTPGet(ctx, h2, "https://"+peer+"/members", withClientCert); err == nil {
		t.Errorf("the client certificate (not a member's) was accepted on the peer port: %s", body)
	} else {
		t.Logf("FIGURE: TLS datastore, the client certificate on the peer port: %v", err)
	}
	// The same certificate is good on the client port: the refusals above
	// are the peer port's, not a broken certificate.
	if body, err := nsHTTPGet(ctx, h2, "https://"+w.Etcd+"/version", withClientCert); err != nil {
		t.Errorf("the client certificate on the client port: %v", err)
	} else if !strings.Contains(body, "etcdserver") {
		t.Errorf("client port /version: %s", body)
	}
	if after := ctl(t, ctx, w, h2, "pool", "show", "-o", "json"); after != pools {
		t.Errorf("the datastore changed:\nbefore %s\nafter %s", pools, after)
	}

	// Keys readable by their owner alone.
	keys, _ := filepath.Glob(filepath.Join(tlsDir, "*-key.pem"))
	if len(keys) != 3 {
		t.Errorf("want 3 keys (CA, member, client) in %s, found %v", tlsDir, keys)
	}
	for _, k := range keys {
		if fi, err := os.Stat(k); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", k, fi.Mode().Perm(), err)
		}
	}
	if fi, err := os.Stat(tlsDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v (%v), want 0700", tlsDir, fi.Mode().Perm(), err)
	}

	// A restart keeps the CA and certificates: the exported environment
	// (which the running nodes hold) stays valid.
	files := []string{"ca.pem", "server.pem", "client.pem"}
	old := map[string][]byte{}
	for _, f := range files {
		old[f], _ = os.ReadFile(filepath.Join(tlsDir, f))
	}
	dataDir := filepath.Join(w.StateDir, "etcd")
	ctl(t, ctx, w, h1, "datastore", "stop", "--data-dir", dataDir)
	out := ctl(t, ctx, w, h1, "datastore", "start", "--listen", w.Etcd, "--data-dir", dataDir, "--tls")
	if !strings.Contains(out, "export "+strings.Join(w.EtcdEnv, " ")) {
		t.Errorf("the restart printed another environment:\n%s\nwant export %s", out, strings.Join(w.EtcdEnv, " "))
	}
	for _, f := range files {
		if b, _ := os.ReadFile(filepath.Join(tlsDir, f)); !bytes.Equal(b, old[f]) {
			t.Errorf("%s changed on restart", f)
		}
	}
	ctl(t, ctx, w, h2, "profile", "add", "PROF_AFTER_RESTART")
	after := honest("after the datastore restarted")
	t.Logf("FIGURE: TLS datastore: honest pings worker-1 -> worker-3 %d/3 before the attacks, %d/3 after a datastore restart", before, after)
}

// ctlOnlyEnv runs calicoctl on h with only env (and PATH) for the datastore
// settings, as a host without our variables would.
func ctlOnlyEnv(ctx context.Context, h *lab.Host, env []string, args ...string) (string, error) {
	argv := append([]string{"env", "-i", "PATH=" + os.Getenv("PATH"), "CALICO_NODENAME=" + h.Label}, env...)
	argv = append(append(argv, filepath.Join(e2etest.BinDir, "calicoctl")), args...)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return h.Run(ctx, argv...)
}

// nsHTTPGet makes one GET from inside ns (nil tlsCfg: plain HTTP) and
// returns the body of a 200 answer.
func nsHTTPGet(ctx context.Context, ns *lab.Host, url string, tlsCfg *tls.Config) (string, error) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	tr := &http.Transport{DialContext: dial, TLSClientConfig: tlsCfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}
