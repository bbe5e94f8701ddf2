// Package datastore is the etcd v3 side of the project: connection settings
// from the environment, the key layout (keys.go), typed reads and writes
// with compare-and-swap, multi-key transactions in its own vocabulary
// (txn.go: Read, Guard, Write), the v3 resources' typed operations and
// all-or-nothing batches (resources.go), a deadline on every call
// (deadline.go), a watch that resyncs (syncer.go), and the embedded etcd
// server. This is
// where etcd stops: other packages get a Client (the bench, which must dial
// from inside a namespace, hands its own etcd client to Adopt), and only
// tests touch etcd directly.
package datastore

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// OpTimeout bounds every single datastore call, so a dead datastore gives an
// error quickly instead of a hang.
const OpTimeout = 5 * time.Second

// Config says where the datastore is and how to authenticate.
type Config struct {
	Endpoints []string
	CAFile    string
	CertFile  string
	KeyFile   string
	// Source names where Endpoints came from (a flag or a variable), so a
	// bad address is reported against what the user actually typed.
	Source string
	// given holds the endpoints as typed, before a scheme was added.
	given []string
}

// ConfigFromEnv reads ETCD_ENDPOINTS (comma-separated URLs), else
// ETCD_AUTHORITY (host:port, the seed's variable), else 127.0.0.1:2379,
// and the ETCD_*_FILE TLS settings. flagEndpoints, when set, wins.
func ConfigFromEnv(flagEndpoints string) Config {
	return ConfigFrom(flagEndpoints, os.Getenv)
}

// ConfigFrom is ConfigFromEnv with the variables read by getenv (the agent
// reads those a CNI plugin forwarded).
func ConfigFrom(flagEndpoints string, getenv func(string) string) Config {
	c := Config{
		CAFile:   getenv("ETCD_CA_CERT_FILE"),
		CertFile: getenv("ETCD_CERT_FILE"),
		KeyFile:  getenv("ETCD_KEY_FILE"),
	}
	scheme := "http://"
	if c.CAFile != "" || c.CertFile != "" {
		scheme = "https://"
	}
	raw, src := flagEndpoints, "--etcd-endpoints"
	if raw == "" {
		raw, src = getenv("ETCD_ENDPOINTS"), "ETCD_ENDPOINTS"
	}
	if raw == "" {
		if a := getenv("ETCD_AUTHORITY"); a != "" {
			raw, src = a, "ETCD_AUTHORITY"
		} else {
			raw, src = "127.0.0.1:2379", "the default"
		}
	}
	c.Source = src
	for _, e := range strings.Split(raw, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		c.given = append(c.given, e)
		if !strings.Contains(e, "://") {
			e = scheme + e
		}
		c.Endpoints = append(c.Endpoints, e)
	}
	return c
}

// Same says whether c and o name the same datastore with the same
// credentials (endpoints in the same order, as given with a scheme).
func (c Config) Same(o Config) bool {
	return slices.Equal(c.Endpoints, o.Endpoints) && c.CAFile == o.CAFile && c.CertFile == o.CertFile && c.KeyFile == o.KeyFile
}

// Validate checks the endpoints' syntax, so a typo fails at once instead of
// after a dial timeout.
func (c Config) Validate() error {
	from := ""
	if c.Source != "" {
		from = " in " + c.Source
	}
	if len(c.Endpoints) == 0 {
		return fmt.Errorf("no datastore address%s: give HOST:PORT (ETCD_AUTHORITY) or URLs such as http://127.0.0.1:2379 (ETCD_ENDPOINTS)", from)
	}
	for i, e := range c.Endpoints {
		shown := e
		if i < len(c.given) {
			shown = c.given[i]
		}
		if reason := endpointProblem(e); reason != "" {
			return fmt.Errorf("bad datastore address %q%s: %s", shown, from, reason)
		}
	}
	return nil
}

// endpointProblem says what is wrong with one endpoint URL, or "".
func endpointProblem(e string) string {
	const want = "want http://HOST:PORT or https://HOST:PORT (or HOST:PORT), e.g. 127.0.0.1:2379"
	u, err := url.Parse(e)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("%v; %s", err, want)
	}
	switch u.Scheme {
	case "http", "https":
	case "unix", "unixs":
		if u.Host == "" && u.Path == "" && u.Opaque == "" {
			return "a unix socket address needs a path, e.g. unix:///run/etcd.sock"
		}
		return ""
	default:
		return fmt.Sprintf("unknown scheme %q; %s", u.Scheme, want)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") || u.Opaque != "" {
		return "only a host and a port may follow the scheme; " + want
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return fmt.Sprintf("missing port; %s", want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("port %q is not a number 1-65535", port)
	}
	if !validHost(host) {
		return fmt.Sprintf("%q is neither an IP address nor a host name", host)
	}
	return ""
}

// validHost accepts an IP address or a DNS name (RFC 1123 labels).
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Client is a connection to the datastore. Every call it makes is bounded
// (see Calls), except the syncer's watch, which is meant to outlive any
// deadline. The etcd client stays inside: callers read and write records
// through typed operations (Get, List, Create, CAS, Update, DeleteKey, and
// Read and Commit for multi-key transactions), never etcd's own.
type Client struct {
	etcd  *clientv3.Client
	cfg   Config
	calls *Calls
	log   *slog.Logger
}

// ErrNotFound is returned by Get when the key does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a compare-and-swap lost a race.
var ErrConflict = errors.New("changed concurrently")

// Connect dials the datastore and checks that it answers within OpTimeout.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	where := strings.Join(cfg.Endpoints, ",")
	var tlsCfg *tls.Config
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("datastore TLS settings (ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE): %w", err)
		}
		// The etcd client retries a refused handshake until its dial
		// timeout and then only says "deadline exceeded"; one handshake of
		// our own names the real problem at once.
		if err := checkTLS(ctx, cfg, tlsCfg); err != nil {
			return nil, err
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          OpTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		if isDeadline(err) {
			return nil, &UnreachableError{Where: where, After: OpTimeout}
		}
		return nil, fmt.Errorf("datastore %s: %w", where, err)
	}
	c := &Client{etcd: cli, cfg: cfg, calls: newCalls(where), log: slog.Default()}
	err = c.calls.Do(ctx, func(ctx context.Context) error {
		_, err := cli.Get(ctx, KeyBGPConfig)
		return err
	})
	if err != nil {
		cli.Close()
		if ep := tlsServerAtHTTP(ctx, cfg.Endpoints); ep != "" {
			return nil, fmt.Errorf("datastore %s speaks TLS, not plain HTTP: use https://%s and set ETCD_CA_CERT_FILE, ETCD_CERT_FILE and ETCD_KEY_FILE (`calicoctl datastore start --tls` prints them)", ep, strings.TrimPrefix(ep, "http://"))
		}
		if errors.Is(err, ErrUnreachable) {
			return nil, err
		}
		return nil, errors.New(unreachableText(where, err.Error()))
	}
	return c, nil
}

// Calls is how many calls (round trips) c has made.
func (c *Client) Calls() int64 {
	if c.calls == nil {
		return 0
	}
	return c.calls.n.Load()
}

// Adopt makes a Client of an etcd client connected some other way (the
// bench dials from inside a network namespace; tests dial a lab's etcd).
func Adopt(cli *clientv3.Client) *Client {
	eps := cli.Endpoints()
	where := strings.Join(eps, ",")
	return &Client{etcd: cli, cfg: Config{Endpoints: eps}, calls: newCalls(where), log: slog.Default()}
}

// SetLogger sends the client's warnings (records skipped because they do
// not decode) to log instead of slog's default logger.
func (c *Client) SetLogger(log *slog.Logger) { c.log = log }

// Close ends the connection.
func (c *Client) Close() error { return c.etcd.Close() }

// Where names the datastore for messages.
func (c *Client) Where() string { return strings.Join(c.cfg.Endpoints, ",") }

// Config is how this client was connected (endpoints and TLS files), for
// programs it starts that must reach the same datastore.
func (c *Client) Config() Config { return c.cfg }

// GetRaw reads one key: its value and mod revision.
func (c *Client) GetRaw(ctx context.Context, key string) ([]byte, int64, error) {
	var resp *clientv3.GetResponse
	err := c.calls.Do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.etcd.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, ErrNotFound
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// Get decodes one key into v and returns its mod revision.
func Get[T any](ctx context.Context, c *Client, key string) (T, int64, error) {
	var v T
	raw, rev, err := c.GetRaw(ctx, key)
	if err != nil {
		return v, 0, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, 0, fmt.Errorf("datastore record %s is not valid: %w", key, err)
	}
	return v, rev, nil
}

// KV is a decoded record and where it lives.
type KV[T any] struct {
	Key   string
	Value T
	Rev   int64
}

// List decodes every record under prefix, skipping (and reporting) records
// that do not decode, so one bad record cannot hide the others.
func List[T any](ctx context.Context, c *Client, prefix string) ([]KV[T], error) {
	var resp *clientv3.GetResponse
	err := c.calls.Do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.etcd.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]KV[T], 0, len(resp.Kvs))
	var bad []string
	for _, kv := range resp.Kvs {
		var v T
		if err := json.Unmarshal(kv.Value, &v); err != nil {
			bad = append(bad, string(kv.Key))
			continue
		}
		out = append(out, KV[T]{Key: string(kv.Key), Value: v, Rev: kv.ModRevision})
	}
	if len(bad) > 0 {
		// A library does not print: the program decides where this goes.
		c.log.Warn("skipped undecodable datastore records", "count", len(bad), "keys", strings.Join(bad, ", "))
	}
	return out, nil
}

// Put writes v at key unconditionally.
func (c *Client) Put(ctx context.Context, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.calls.Do(ctx, func(ctx context.Context) error {
		_, err := c.etcd.Put(ctx, key, string(raw))
		return err
	})
}

// Create writes v at key only if the key does not exist; ErrConflict otherwise.
func (c *Client) Create(ctx context.Context, key string, v any) error {
	return c.CAS(ctx, key, 0, v)
}

// CAS writes v at key only if the key's mod revision is still rev (0: absent).
func (c *Client) CAS(ctx context.Context, key string, rev int64, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.guarded(ctx, Unchanged(key, rev), Write{key: key, value: string(raw)})
}

// guarded runs one guarded write; ErrConflict when the guard failed.
func (c *Client) guarded(ctx context.Context, g Guard, w Write) error {
	ok, err := c.Commit(ctx, []Guard{g}, []Write{w})
	if err != nil {
		return err
	}
	if !ok {
		return ErrConflict
	}
	return nil
}

// DeleteKey removes key; with rev > 0 only if unchanged since rev.
func (c *Client) DeleteKey(ctx context.Context, key string, rev int64) error {
	if rev == 0 {
		return c.calls.Do(ctx, func(ctx context.Context) error {
			_, err := c.etcd.Delete(ctx, key)
			return err
		})
	}
	return c.guarded(ctx, Unchanged(key, rev), WriteDelete(key))
}

// DeletePrefix removes every key under prefix (which must end in '/', so
// "host1/" never takes "host10/" with it).
func (c *Client) DeletePrefix(ctx context.Context, prefix string) error {
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("datastore: delete of prefix %q refused: a prefix must end in '/'", prefix)
	}
	return c.calls.Do(ctx, func(ctx context.Context) error {
		_, err := c.etcd.Delete(ctx, prefix, clientv3.WithPrefix())
		return err
	})
}

// Update reads key, applies fn and writes back with compare-and-swap,
// retrying when another writer got there first. fn may return an error to abort.
func Update[T any](ctx context.Context, c *Client, key string, fn func(*T) error) error {
	for attempt := 0; attempt < 20; attempt++ {
		v, rev, err := Get[T](ctx, c, key)
		if err != nil {
			return err
		}
		if err := fn(&v); err != nil {
			return err
		}
		err = c.CAS(ctx, key, rev, v)
		if errors.Is(err, ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("update %s: too many concurrent changes, try again", key)
}
