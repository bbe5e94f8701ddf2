package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// result is one finished calicoctl run.
type result struct {
	args    []string
	stdout  string
	stderr  string
	code    int
	elapsed time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("calicoctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// ctl runs calicoctl with exactly the given environment additions on top of
// a clean copy of ours (every ETCD_* and CALICO_* variable removed, so the
// caller's shell cannot leak a datastore into the test).
func ctl(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "calicoctl"), args...)
	cmd.Env = cleanEnv(env)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Daemons started by `datastore start` inherit nothing of ours but would
	// keep pipes open if they did; WaitDelay bounds that.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{args: args, stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("calicoctl %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("calicoctl %s: timed out\n%s", strings.Join(args, " "), r)
	}
	return r
}

func cleanEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ETCD_") || strings.HasPrefix(k, "CALICO_") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// freePort returns a port on 127.0.0.1 that nothing listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func portOpen(port int) bool {
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// store is one running datastore and a client for checking its contents.
type store struct {
	t       *testing.T
	port    int
	dataDir string
	node    string
	etcd    *clientv3.Client
}

// on returns the store bound to t, for use inside a subtest.
func (s *store) on(t *testing.T) *store {
	c := *s
	c.t = t
	return &c
}

func (s *store) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// env is the default environment for commands against this store.
func (s *store) env() map[string]string {
	return map[string]string{"ETCD_AUTHORITY": s.addr(), "CALICO_NODENAME": s.node}
}

// startStore starts an etcd with `calicoctl datastore start` and arranges
// `calicoctl datastore stop` when the test ends, whatever the outcome.
func startStore(t *testing.T) *store {
	t.Helper()
	dataDir := t.TempDir() // registered first, so removed after the stop below
	var s *store
	var r result
	for attempt := 0; attempt < 3; attempt++ {
		port, peer := freePort(t), freePort(t)
		if port == peer {
			continue
		}
		t.Cleanup(func() { stopStore(t, dataDir) })
		r = ctl(t, nil, "", "datastore", "start",
			"--listen", "127.0.0.1:"+strconv.Itoa(port),
			"--peer-listen", "127.0.0.1:"+strconv.Itoa(peer),
			"--data-dir", dataDir, "--timeout", "20s")
		if r.code == 0 {
			s = &store{t: t, port: port, dataDir: dataDir, node: "h1"}
			break
		}
		// Another process may have taken a port between our check and etcd's bind.
		t.Logf("datastore start failed, retrying:\n%s", r)
	}
	if s == nil {
		t.Fatalf("cannot start a datastore:\n%s", r)
	}
	want := fmt.Sprintf("Datastore (etcd) is serving on http://%s, pid ", s.addr())
	if !strings.HasPrefix(r.stdout, want) || !strings.Contains(r.stdout, "data in "+dataDir) {
		t.Errorf("datastore start printed %q, want it to start %q and name %s", r.stdout, want, dataDir)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + s.addr()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() }) // runs before the stop: clients first
	s.etcd = cli
	return s
}

func stopStore(t *testing.T, dataDir string) {
	pidFile := filepath.Join(dataDir, "etcd.pid")
	if _, err := os.Stat(pidFile); err != nil {
		return // never started, or already stopped by the test
	}
	r := ctl(t, nil, "", "datastore", "stop", "--data-dir", dataDir)
	if r.code != 0 && !strings.Contains(r.stderr, "no datastore running") {
		t.Errorf("cleanup: %s", r)
	}
}

// run runs calicoctl against the store with its default environment plus extra.
func (s *store) run(args ...string) result {
	s.t.Helper()
	return ctl(s.t, s.env(), "", args...)
}

// ok runs a command that must succeed and returns its stdout.
func (s *store) ok(args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	if r.code != 0 {
		s.t.Fatalf("want success:\n%s", r)
	}
	return r.stdout
}

// okIn is ok with stdin.
func (s *store) okIn(stdin string, args ...string) string {
	s.t.Helper()
	r := ctl(s.t, s.env(), stdin, args...)
	if r.code != 0 {
		s.t.Fatalf("want success:\n%s", r)
	}
	return r.stdout
}

// okJSON runs a command and decodes its stdout into v.
func (s *store) okJSON(v any, args ...string) {
	s.t.Helper()
	out := s.ok(args...)
	// Decode into a zeroed value: json reuses slice elements and leaves
	// fields absent from the input as they were.
	rv := reflect.ValueOf(v).Elem()
	rv.Set(reflect.Zero(rv.Type()))
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		s.t.Fatalf("calicoctl %s: output is not the expected JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// snapshot returns every key under /calico/ with its value.
func (s *store) snapshot() map[string]string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.etcd.Get(ctx, "/calico/", clientv3.WithPrefix())
	if err != nil {
		s.t.Fatalf("snapshot: %v", err)
	}
	m := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

// get decodes one stored key into v; it reports whether the key exists.
func (s *store) get(key string, v any) bool {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.etcd.Get(ctx, key)
	if err != nil {
		s.t.Fatalf("get %s: %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return false
	}
	if v != nil {
		rv := reflect.ValueOf(v).Elem()
		rv.Set(reflect.Zero(rv.Type()))
		if err := json.Unmarshal(resp.Kvs[0].Value, v); err != nil {
			s.t.Fatalf("stored %s is not valid JSON: %v: %s", key, err, resp.Kvs[0].Value)
		}
	}
	return true
}

// put writes a record directly, for state only calico-node or a real
// workload would create.
func (s *store) put(key string, v any) {
	s.t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.etcd.Put(ctx, key, string(raw)); err != nil {
		s.t.Fatalf("put %s: %v", key, err)
	}
}

// keys lists stored keys under prefix, sorted.
func (s *store) keys(prefix string) []string {
	s.t.Helper()
	var out []string
	for k := range s.snapshot() {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// diff describes how two snapshots differ, or "" when equal.
func diff(before, after map[string]string) string {
	var lines []string
	for k, v := range before {
		w, ok := after[k]
		switch {
		case !ok:
			lines = append(lines, "deleted "+k)
		case v != w:
			lines = append(lines, fmt.Sprintf("changed %s:\n    %s\n -> %s", k, v, w))
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			lines = append(lines, "added "+k+" = "+v)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// table parses aligned table output: the header line must hold exactly the
// given column names (upper case) in order; rows are cut at the header's
// column offsets, so empty cells are kept.
func table(t *testing.T, out string, cols ...string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 {
		t.Fatalf("no table in %q", out)
	}
	header := lines[0]
	offs := make([]int, len(cols))
	at := 0
	for i, c := range cols {
		c = strings.ToUpper(c)
		j := strings.Index(header[at:], c)
		if j < 0 || (i == 0 && j != 0) {
			t.Fatalf("table header %q: want columns %q", header, cols)
		}
		offs[i] = at + j
		at += j + len(c)
	}
	if rest := strings.TrimSpace(header[at:]); rest != "" {
		t.Fatalf("table header %q has extra columns after %q: %q", header, cols, rest)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		row := make([]string, len(cols))
		for i := range cols {
			if offs[i] >= len(l) {
				continue
			}
			end := len(l)
			if i+1 < len(cols) && offs[i+1] < end {
				end = offs[i+1]
			}
			row[i] = strings.TrimSpace(l[offs[i]:end])
		}
		rows = append(rows, row)
	}
	return rows
}
