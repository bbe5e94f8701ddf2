package datastore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// TLSFiles are the certificates and keys `calicoctl datastore start --tls`
// keeps under DATA_DIR/tls: a CA of the datastore's own, the member's
// certificate (for clients and for the other members alike) and a client
// certificate for calicoctl and calico-node.
type TLSFiles struct {
	Dir                   string
	CA, CAKey             string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// TLSFilesIn names the TLS files of a data directory.
func TLSFilesIn(dataDir string) TLSFiles {
	d := filepath.Join(dataDir, "tls")
	return TLSFiles{
		Dir: d,
		CA:  filepath.Join(d, "ca.pem"), CAKey: filepath.Join(d, "ca-key.pem"),
		ServerCert: filepath.Join(d, "server.pem"), ServerKey: filepath.Join(d, "server-key.pem"),
		ClientCert: filepath.Join(d, "client.pem"), ClientKey: filepath.Join(d, "client-key.pem"),
	}
}

// MemberCN names the member certificates EnsureTLS issues. The peer port
// accepts only certificates with this name, so a client certificate from
// the same CA (calicoctl's, any node's) cannot speak raft to the members.
const MemberCN = "calico-go datastore member"

// Lifetimes: the CA outlives the certificates it signs, which are renewed
// by a restart of the member once they near their end (see EnsureTLS).
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 2 * 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// EnsureTLS makes what is missing under DATA_DIR/tls and keeps what is
// there: a rerun keeps the CA (so clients' CA file stays valid) and the
// certificates, and issues a new member certificate only when the old one
// does not name every address in hosts, nears its end, or was not signed
// by the CA (a CA copied in from another member of the cluster). Keys are
// mode 0600 in a directory of mode 0700.
func EnsureTLS(dataDir string, hosts []string) (TLSFiles, error) {
	f := TLSFilesIn(dataDir)
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return f, err
	}
	if err := os.Chmod(f.Dir, 0o700); err != nil {
		return f, err
	}
	ca, caKey, err := ensureCA(f)
	if err != nil {
		return f, err
	}
	if err := ensureLeaf(f.ServerCert, f.ServerKey, ca, caKey, MemberCN, hosts, true); err != nil {
		return f, err
	}
	if err := ensureLeaf(f.ClientCert, f.ClientKey, ca, caKey, "calico-go client", nil, false); err != nil {
		return f, err
	}
	return f, nil
}

func ensureCA(f TLSFiles) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	_, certErr := os.Stat(f.CA)
	_, keyErr := os.Stat(f.CAKey)
	switch {
	case certErr == nil && keyErr == nil:
		cert, err := readCert(f.CA)
		if err != nil {
			return nil, nil, err
		}
		key, err := readKey(f.CAKey)
		if err != nil {
			return nil, nil, err
		}
		if !cert.IsCA {
			return nil, nil, fmt.Errorf("%s is not a CA certificate; remove %s to have a new CA made", f.CA, f.Dir)
		}
		return cert, key, nil
	case certErr == nil || keyErr == nil:
		return nil, nil, fmt.Errorf("%s has only one of ca.pem and ca-key.pem; copy both from the cluster's first member (or remove both to make a new CA)", f.Dir)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "calico-go datastore CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(f.CAKey, key); err != nil {
		return nil, nil, err
	}
	if err := writeCert(f.CA, der); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// ensureLeaf keeps a certificate signed by ca that names every host and is
// not near its end, and otherwise issues a new one with a new key.
func ensureLeaf(certFile, keyFile string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, hosts []string, server bool) error {
	if cert, err := readCert(certFile); err == nil {
		if _, kerr := readKey(keyFile); kerr == nil && cert.CheckSignatureFrom(ca) == nil &&
			time.Until(cert.NotAfter) > renewBefore && names(cert, hosts) {
			return nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		// The member certificate also authenticates this member to the
		// others (etcd peers are clients of each other).
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyFile, key); err != nil {
		return err
	}
	return writeCert(certFile, der)
}

// names says whether cert is valid for every host.
func names(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
				return false
			}
		} else if !slices.Contains(cert.DNSNames, h) {
			return false
		}
	}
	return true
}

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	switch blk.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if ek, ok := k.(*ecdsa.PrivateKey); ok {
			return ek, nil
		}
	}
	return nil, errors.New(path + " is not an ECDSA key (the keys made here are; remove the tls directory to start over)")
}

// writeKey writes a private key readable by its owner alone: created with
// mode 0600 and set to it, in case the file was there with another mode.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writeCert(path string, der []byte) error { return writePEM(path, "CERTIFICATE", der, 0o644) }

// writePEM writes through a temporary file and a rename, so a crash never
// leaves half a key or certificate behind.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
