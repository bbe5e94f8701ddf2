package dstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a test certificate authority.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	name string
}

var serial int64 = 1

func newCA(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &pki{cert: cert, key: key, dir: dir, name: name}
	writePEM(t, ca.path("ca.pem"), "CERTIFICATE", der)
	return ca
}

func (ca *pki) path(f string) string { return filepath.Join(ca.dir, ca.name+"-"+f) }

// issue makes a leaf certificate for a server (with IP SANs) or a client,
// and returns the paths of its certificate and key.
func (ca *pki) issue(t *testing.T, name string, server bool, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = ca.path(name+".pem"), ca.path(name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSClientCertificates: the embedded etcd started by `calicoctl
// datastore start` with TLS flags serves only clients with a certificate
// from its CA. calicoctl with ETCD_CA_CERT_FILE, ETCD_CERT_FILE and
// ETCD_KEY_FILE works; a client certificate from another CA, no client
// certificate, a CA that did not sign the server's certificate, and plain
// HTTP each fail at once with a one-line error that says what to change,
// and none of them changes the datastore.
func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	other := newCA(t, dir, "other")
	srvCert, srvKey := ca.issue(t, "etcd", true, net.ParseIP("127.0.0.1"))
	cliCert, cliKey := ca.issue(t, "calicoctl", false)
	badCert, badKey := other.issue(t, "intruder", false)

	good := map[string]string{
		"ETCD_CA_CERT_FILE": ca.path("ca.pem"),
		"ETCD_CERT_FILE":    cliCert,
		"ETCD_KEY_FILE":     cliKey,
	}
	// `datastore start` probes the new server with the client certificate
	// from the environment.
	st := startLocalStore(t, []string{"--cert-file", srvCert, "--key-file", srvKey,
		"--ca-file", ca.path("ca.pem"), "--client-cert-auth"}, good)
	good["ETCD_AUTHORITY"] = st.addr
	with := func(changes map[string]string) map[string]string {
		env := map[string]string{}
		for k, v := range good {
			env[k] = v
		}
		for k, v := range changes {
			if v == "" {
				delete(env, k)
			} else {
				env[k] = v
			}
		}
		return env
	}

	r := calicoctl(t, nil, good, "", "pool", "add", "10.88.0.0/16")
	if r.code != 0 {
		t.Fatalf("with a good client certificate: %s", r)
	}
	show := calicoctl(t, nil, good, "", "pool", "show", "-o", "json")
	if show.code != 0 || !strings.Contains(show.stdout, `"10.88.0.0/16"`) {
		t.Fatalf("pool show over TLS: %s", show)
	}
	before := show.stdout

	https := "https://" + st.addr
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"client certificate from another CA", map[string]string{"ETCD_CERT_FILE": badCert, "ETCD_KEY_FILE": badKey},
			"datastore " + https + " refused the client certificate " + badCert + " (remote error: tls: "},
		{"no client certificate", map[string]string{"ETCD_CERT_FILE": "", "ETCD_KEY_FILE": ""},
			"datastore " + https + " requires a client certificate and refused the connection"},
		{"server certificate from an untrusted CA", map[string]string{"ETCD_CA_CERT_FILE": other.path("ca.pem")},
			"datastore " + https + ": its TLS certificate is not signed by a CA we trust (ETCD_CA_CERT_FILE: " + other.path("ca.pem") + ")"},
		{"client key that does not match", map[string]string{"ETCD_KEY_FILE": badKey},
			"datastore TLS settings (ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE): tls: private key does not match public key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := calicoctl(t, nil, with(c.env), "", "pool", "add", "10.89.0.0/16")
			t.Logf("FIGURE: TLS %s: exit %d after %s: %s", c.name, r.code, r.elapsed.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code == 0 {
				t.Fatalf("want failure: %s", r)
			}
			line, rest, _ := strings.Cut(r.stderr, "\n")
			if rest != "" || !strings.HasPrefix(line, "error: ") || !strings.Contains(line, c.want) {
				t.Errorf("want one error line containing %q: %s", c.want, r)
			}
			if r.elapsed > 2*time.Second {
				t.Errorf("took %s; a refused certificate must be reported at once", r.elapsed)
			}
		})
	}
	after := calicoctl(t, nil, good, "", "pool", "show", "-o", "json")
	if after.stdout != before {
		t.Errorf("the datastore changed:\nbefore %s\nafter %s", before, after.stdout)
	}
}
