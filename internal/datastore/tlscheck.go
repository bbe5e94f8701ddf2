package datastore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// tlsCheckTimeout bounds the handshake checkTLS makes. A datastore that does
// not answer within it is left to the normal connect path to report.
const tlsCheckTimeout = 3 * time.Second

// checkTLS makes one TLS handshake with every https endpoint, in parallel,
// and returns nil as soon as one accepts us. When every endpoint that
// answered refused the handshake, it returns a one-line error saying why
// (wrong CA, missing or rejected client certificate, plain HTTP server).
//
// The handshake is capped at TLS 1.2 on purpose: in TLS 1.3 a server rejects
// a client certificate only after the client considers the handshake done,
// so the refusal would surface as a later read error; in TLS 1.2 it fails the
// handshake itself. A server that refuses TLS 1.2 cannot be diagnosed this
// way and is left to the normal path.
func checkTLS(ctx context.Context, cfg Config, base *tls.Config) error {
	var eps []string
	for _, e := range cfg.Endpoints {
		if strings.HasPrefix(e, "https://") {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, tlsCheckTimeout)
	defer cancel()
	type result struct {
		ep      string
		err     error
		refused bool // the server answered and the handshake failed
	}
	ch := make(chan result, len(eps))
	for _, ep := range eps {
		go func() {
			refused, err := handshake(ctx, ep, base)
			ch <- result{ep, err, refused}
		}()
	}
	var first *result
	for range eps {
		r := <-ch
		if r.err == nil {
			return nil
		}
		if r.refused && first == nil {
			first = &r
		}
	}
	if first == nil {
		return nil // nobody answered: Connect reports the datastore unreachable
	}
	return describeTLSError(cfg, first.ep, first.err)
}

// handshake dials ep and runs a TLS 1.2 handshake. refused is true when the
// TCP connection worked but the handshake did not.
func handshake(ctx context.Context, ep string, base *tls.Config) (refused bool, err error) {
	u, err := url.Parse(ep)
	if err != nil {
		return false, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	tc := base.Clone()
	tc.MaxVersion = tls.VersionTLS12
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	err = tls.Client(conn, tc).HandshakeContext(ctx)
	switch {
	case err == nil:
		return false, nil
	case ctx.Err() != nil:
		return false, err
	case isRemoteAlert(err, "protocol version not supported"):
		// A TLS 1.3-only server: we cannot judge, so do not object.
		return false, nil
	}
	return true, err
}

// isRemoteAlert reports whether err is an alert the server sent; with a
// non-empty text, only that alert.
func isRemoteAlert(err error, text string) bool {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" {
		return false
	}
	return text == "" || strings.Contains(oe.Err.Error(), text)
}

// describeTLSError turns a failed handshake into what the user must change.
func describeTLSError(cfg Config, ep string, err error) error {
	var hostErr x509.HostnameError
	var authErr x509.UnknownAuthorityError
	var verifyErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &hostErr):
		return fmt.Errorf("datastore %s: its TLS certificate is not valid for that address (%v); connect to an address its certificate names", ep, hostErr)
	case errors.As(err, &authErr) || errors.As(err, &verifyErr):
		ca := cfg.CAFile
		if ca == "" {
			ca = "unset, so the system CAs were used"
		}
		return fmt.Errorf("datastore %s: its TLS certificate is not signed by a CA we trust (ETCD_CA_CERT_FILE: %s); point ETCD_CA_CERT_FILE at the CA that signed it", ep, ca)
	case isRemoteAlert(err, ""):
		if cfg.CertFile == "" {
			return fmt.Errorf("datastore %s requires a client certificate and refused the connection (%v); set ETCD_CERT_FILE and ETCD_KEY_FILE", ep, err)
		}
		return fmt.Errorf("datastore %s refused the client certificate %s (%v); use a certificate signed by a CA the datastore trusts", ep, cfg.CertFile, err)
	case strings.Contains(err.Error(), "does not look like a TLS handshake"):
		return fmt.Errorf("datastore %s does not speak TLS; use an http:// address, or unset ETCD_CA_CERT_FILE, ETCD_CERT_FILE and ETCD_KEY_FILE", ep)
	}
	return fmt.Errorf("datastore %s: TLS handshake failed: %v", ep, err)
}

// tlsServerAtHTTP returns the first http:// endpoint whose server answers a
// TLS handshake: a client that forgot https:// otherwise only learns that
// the datastore "did not answer" (etcd's TLS port drops the plain request).
func tlsServerAtHTTP(ctx context.Context, endpoints []string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 500*time.Millisecond)
	defer cancel()
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "http" {
			continue
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			continue
		}
		// Only whether the server speaks TLS: nothing is sent after the
		// handshake, so skipping verification exposes nothing.
		err = tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()}).HandshakeContext(ctx)
		conn.Close()
		if err == nil || isRemoteAlert(err, "") {
			return ep
		}
	}
	return ""
}
