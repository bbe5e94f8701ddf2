package dstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
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
	return fmt.Sprintf("calicoctl %s: exit %d (%s)\nstdout:\n%s\nstderr:\n%s",
		clip(strings.Join(r.args, " ")), r.code, r.elapsed.Round(time.Millisecond), clip(r.stdout), clip(r.stderr))
}

// clip keeps huge hostile inputs out of test logs.
func clip(s string) string {
	if len(s) > 400 {
		return s[:400] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// calicoctl runs calicoctl inside ns (nil: this process's namespace) with
// env on top of a copy of our environment from which every ETCD_* and
// CALICO_* variable was removed, so the caller's shell cannot leak in.
func calicoctl(t testing.TB, ns *lab.Netns, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	r, err := runCtl(ns, env, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runCtl is calicoctl for any goroutine: it reports instead of failing.
func runCtl(ns *lab.Netns, env map[string]string, stdin string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin := filepath.Join(binDir, "calicoctl")
	var cmd *exec.Cmd
	if ns != nil {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, bin}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Env = cleanEnv(env)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// Daemons started by `datastore start` and `node` close our pipes, but
	// WaitDelay bounds the wait if one ever did not.
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
		return r, fmt.Errorf("calicoctl %s: %v", clip(strings.Join(args, " ")), err)
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("calicoctl timed out: %s", r)
	}
	return r, nil
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

// world is a namespace lab of hosts on one fabric (10.0.0.0/24), with a
// state directory for the daemons calicoctl starts on them.
type world struct {
	t     *testing.T
	lab   *lab.Lab
	fab   *lab.Fabric
	hosts []*lab.Host
	dir   string
	etcd  []string // client URLs of the datastore members
}

// newWorld makes n hosts h1..hn at 10.0.0.1..n. Everything is removed when
// the test ends, daemons first.
func newWorld(t *testing.T, n int) *world {
	t.Helper()
	l, err := lab.New(labPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	w := &world{t: t, lab: l, dir: newStateDir(t)}
	t.Cleanup(func() {
		if t.Failed() {
			w.dumpLogs()
		}
	})
	if w.fab, err = l.AddFabric("fab", "10.0.0.0/24"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		// A gateway address that nobody answers for still gives hosts the
		// default route proxy ARP for 169.254.1.1 needs.
		h, err := l.AddHost(fmt.Sprintf("h%d", i), w.fab, fmt.Sprintf("10.0.0.%d/24", i), "10.0.0.254")
		if err != nil {
			t.Fatal(err)
		}
		w.hosts = append(w.hosts, h)
	}
	return w
}

func (w *world) env(h *lab.Host) map[string]string {
	return map[string]string{
		"ETCD_ENDPOINTS":   strings.Join(w.etcd, ","),
		"CALICO_NODENAME":  h.Label,
		"CALICO_STATE_DIR": w.dir,
	}
}

// ctl runs calicoctl on host h as a user there would.
func (w *world) ctl(h *lab.Host, args ...string) result {
	w.t.Helper()
	return calicoctl(w.t, h.Netns, w.env(h), "", args...)
}

// ok runs a command that must succeed and returns its stdout.
func (w *world) ok(h *lab.Host, args ...string) string {
	w.t.Helper()
	r := w.ctl(h, args...)
	if r.code != 0 {
		w.t.Fatalf("%s: want success:\n%s", h.Label, r)
	}
	return r.stdout
}

// etcdDir is where member name keeps its data, log and pid file.
func (w *world) etcdDir(name string) string { return filepath.Join(w.dir, "etcd-"+name) }

// startEtcd starts one datastore member per host with `calicoctl datastore
// start` inside the host's namespace: a single member, or with more hosts
// one cluster (members n1..nN named after their host's position). All are
// started at once, since a member of a new cluster serves only once a
// quorum of members runs.
func (w *world) startEtcd(hosts ...*lab.Host) {
	w.t.Helper()
	var initial []string
	for i, h := range hosts {
		initial = append(initial, fmt.Sprintf("n%d=http://%s:2380", i+1, h.Addr()))
		w.etcd = append(w.etcd, fmt.Sprintf("http://%s:2379", h.Addr()))
	}
	errs := make(chan string, len(hosts))
	for i, h := range hosts {
		go func() {
			args := w.etcdArgs(i+1, h, strings.Join(initial, ","))
			r, err := runCtl(h.Netns, nil, "", args...)
			switch {
			case err != nil:
				errs <- err.Error()
			case r.code != 0:
				errs <- r.String()
			default:
				errs <- ""
			}
		}()
	}
	for range hosts {
		if e := <-errs; e != "" {
			w.t.Fatalf("datastore start: %s", e)
		}
	}
}

// etcdArgs is the `datastore start` command of member n on host h.
func (w *world) etcdArgs(n int, h *lab.Host, initial string) []string {
	name := fmt.Sprintf("n%d", n)
	args := []string{"datastore", "start", "--name", name,
		"--listen", h.Addr().String() + ":2379", "--peer-listen", h.Addr().String() + ":2380",
		"--data-dir", w.etcdDir(name), "--timeout", "40s"}
	if strings.Contains(initial, ",") {
		args = append(args, "--initial-cluster", initial)
	}
	return args
}

// startNode runs `calicoctl node` on h. --docker-host=none: lab hosts have
// no engine of their own, and the machine's engine (reachable through the
// shared file system) holds other tests' containers.
func (w *world) startNode(h *lab.Host, extra ...string) {
	w.t.Helper()
	w.ok(h, append([]string{"node", "--ip=" + h.Addr().String(), "--name=" + h.Label, "--docker-host=none"}, extra...)...)
}

// nodePID reads the pid of h's calico-node.
func (w *world) nodePID(h *lab.Host) int {
	b, err := os.ReadFile(filepath.Join(w.dir, "run", "calico", h.Label, "calico-node.pid"))
	if err != nil {
		w.t.Fatalf("calico-node pid of %s: %v", h.Label, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (w *world) nodeLog(h *lab.Host) string {
	b, _ := os.ReadFile(filepath.Join(w.dir, "log", "calico", h.Label, "calico-node.log"))
	return string(b)
}

// addWorkload makes a workload namespace on h and attaches it.
func (w *world) addWorkload(h *lab.Host, name, ip string) (*lab.Netns, netip.Addr) {
	w.t.Helper()
	ns, err := w.lab.AddWorkloadNetns(h, name)
	if err != nil {
		w.t.Fatal(err)
	}
	out := w.ok(h, "container", "add", name, ip, "--netns", ns.Path)
	// "IP 192.168.100.1/32 added to ..."
	f := strings.Fields(out)
	if len(f) < 2 {
		w.t.Fatalf("container add printed %q", out)
	}
	p, err := netip.ParsePrefix(strings.Split(f[1], ",")[0])
	if err != nil {
		w.t.Fatalf("container add printed %q: %v", out, err)
	}
	return ns, p.Addr()
}

// client is an etcd client whose connections are made inside h's
// namespace (the members listen on fabric addresses), to the given
// endpoints (default: every member). Closed before the members stop.
func (w *world) client(h *lab.Host, endpoints ...string) *clientv3.Client {
	w.t.Helper()
	if len(endpoints) == 0 {
		endpoints = w.etcd
	}
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { cli.Close() })
	return cli
}

// routes lists h's routes of protocol 80 (ours), both families, sorted.
func routes(t testing.TB, h *lab.Host) string {
	t.Helper()
	return sortedLines(hostSh(t, h, "ip -4 route show proto 80; ip -6 route show proto 80"))
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// hostSh runs a shell script inside h's namespace and returns its output.
func hostSh(t testing.TB, h *lab.Host, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Run(ctx, "sh", "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// kernelState is what the agent programs on h: our routes, the interface
// names, and the lines of our nftables table (counters masked). One process, so it can
// be taken often.
func kernelState(t testing.TB, h *lab.Host) string {
	t.Helper()
	out := hostSh(t, h, "ip -4 route show proto 80; ip -6 route show proto 80; echo @@; ip -br link show | cut -d' ' -f1 | sort; echo @@; nft list table inet calico")
	parts := strings.SplitN(out, "@@\n", 3)
	if len(parts) != 3 {
		t.Fatalf("kernel state of %s: %q", h.Label, out)
	}
	// The table's lines are sorted too: the agent's periodic atomic rewrite
	// may list the same objects in another order.
	return "routes:\n" + sortedLines(parts[0]) + "\nlinks:\n" + parts[1] + "nft:\n" + sortedLines(counterRE.ReplaceAllString(parts[2], "counter"))
}

// waitFor polls cond every 50 ms until it holds or d passes, and returns
// how long it took.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	return e2etest.WaitEvery(t, d, 50*time.Millisecond, what, cond)
}

// dumpLogs shows the tails of the daemons' logs: where a failure's cause is.
func (w *world) dumpLogs() {
	var logs []string
	filepath.Walk(w.dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".log") {
			logs = append(logs, p)
		}
		return nil
	})
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		w.t.Logf("--- %s\n%s", l, strings.Join(lines, "\n"))
	}
}

// ping reports whether from gets an echo reply from to within a few tries.
func ping(from *lab.Netns, to netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		r, err := lab.Ping(ctx, from, to, 2, time.Second)
		if err == nil && r.Received > 0 {
			return true
		}
		time.Sleep(300 * time.Millisecond)
	}
	return false
}
