package routing

// The test lab: each BGP speaker runs as a child process (this test binary,
// re-executed) inside a network namespace of its own, because GoBGP creates
// its listener and dials its peers from goroutines that may run on any OS
// thread, so a namespace cannot be entered from inside one test process.
// The hosts' namespaces hang off a bridge in a fabric namespace; nothing is
// created in, or sent through, the test's own namespace.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"

	calicoapi "github.com/calico-go/calico/internal/api"
)

const (
	helperEnv = "CALICO_ROUTING_TEST_HELPER"
	// gobgpDebugEnv=1 makes the speakers log GoBGP's debug messages.
	gobgpDebugEnv = "CALICO_ROUTING_TEST_GOBGP_DEBUG"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		helperMain()
		return
	}
	os.Exit(m.Run())
}

// helperConfig is Config without the logger, which cannot cross a pipe.
type helperConfig struct {
	RouterID            netip.Addr
	ASN                 uint32
	ListenAddr          netip.Addr
	NextHopV6           netip.Addr
	HoldTime            time.Duration
	GracefulRestartTime time.Duration
}

type helperReq struct {
	Op       string // start, peers, announce, learned, states, stop, restart, goroutines
	Config   helperConfig
	Peers    []Peer
	Prefixes []netip.Prefix
	Flush    bool // stop: StopAndFlush instead of Stop
}

type helperResp struct {
	Err        string
	Learned    map[netip.Prefix][]Path
	Changes    int64 // signals received from Changes() so far
	WholeReads int64 // rebuilds that read the whole RIB so far
	SomeReads  int64 // rebuilds that read some prefixes so far
	States     []calicoapi.PeerState
	Goroutines int    // goroutines: how many the process has
	Stacks     string // goroutines: their stacks
}

// helperMain serves requests from the parent test, one JSON object per line
// on stdin, until stdin closes (the parent is gone: exit as a crash would)
// or a stop request has been served.
func helperMain() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	var sp *Speaker
	var cfg helperConfig
	var changes atomic.Int64
	counting := make(chan struct{}) // closed to end the counter of Changes()
	start := func(c helperConfig) (err error) {
		cfg = c
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sp, err = Start(ctx, Config{
			RouterID: c.RouterID, ASN: c.ASN, ListenAddr: c.ListenAddr,
			NextHopV6: c.NextHopV6, HoldTime: c.HoldTime,
			GracefulRestartTime: c.GracefulRestartTime, Logger: logger,
		})
		if err == nil && os.Getenv(gobgpDebugEnv) != "" {
			// GoBGP's own FSM chatter, for debugging a failing test.
			_ = sp.bgp.SetLogLevel(context.Background(), &api.SetLogLevelRequest{Level: api.SetLogLevelRequest_DEBUG})
		}
		if err == nil {
			counting = make(chan struct{})
			go func(ch <-chan struct{}, done <-chan struct{}) {
				for {
					select {
					case <-ch:
						changes.Add(1)
					case <-done:
						return
					}
				}
			}(sp.Changes(), counting)
		}
		return err
	}
	for {
		var req helperReq
		if err := dec.Decode(&req); err != nil {
			os.Exit(0)
		}
		var resp helperResp
		var err error
		switch {
		case req.Op == "start":
			err = start(req.Config)
		case req.Op == "goroutines":
			resp.Goroutines = runtime.NumGoroutine()
			buf := make([]byte, 1<<20)
			resp.Stacks = string(buf[:runtime.Stack(buf, true)])
		case sp == nil:
			err = fmt.Errorf("%s before start", req.Op)
		case req.Op == "peers":
			err = sp.SetPeers(req.Peers)
		case req.Op == "announce":
			err = sp.SetAnnounced(req.Prefixes)
		case req.Op == "learned":
			resp.Learned = sp.Learned()
			resp.Changes = changes.Load()
			resp.WholeReads, resp.SomeReads = sp.wholeReads.Load(), sp.someReads.Load()
		case req.Op == "states":
			resp.States = sp.PeerStates()
		case req.Op == "stop":
			if req.Flush {
				sp.StopAndFlush()
			} else {
				sp.Stop()
			}
		case req.Op == "restart":
			// What the agent does when its AS number changes: the same
			// process stops its speaker and starts a new one.
			sp.Stop()
			close(counting)
			err = start(cfg)
		default:
			err = fmt.Errorf("unknown op %q", req.Op)
		}
		if err != nil {
			resp.Err = err.Error()
		}
		if enc.Encode(&resp) != nil {
			os.Exit(1)
		}
		if req.Op == "stop" {
			os.Exit(0)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// host is one node of the lab: a namespace with eth0 on the fabric.
type host struct {
	name string
	ns   string
	ip4  netip.Addr // 10.99.0.N
	ip6  netip.Addr // fd00:99::N
}

// newLab creates a fabric namespace with a bridge and one namespace per
// name, all removed when the test ends, whatever its outcome.
func newLab(t *testing.T, names ...string) []*host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the routing tests create network namespaces: run them as root")
	}
	id := "rt" + randHex(3)
	fabric := id + "-f"
	addNS := func(ns string) {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("remove namespace %s: %v %s", ns, err, out)
			}
		})
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	addNS(fabric)
	run(t, "ip", "-n", fabric, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", fabric, "link", "set", "br0", "up")
	var hosts []*host
	for i, name := range names {
		h := &host{
			name: name,
			ns:   id + "-" + name,
			ip4:  netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}),
			ip6:  netip.MustParseAddr(fmt.Sprintf("fd00:99::%x", i+1)),
		}
		addNS(h.ns)
		// Created inside the host's namespace with its peer end sent
		// straight to the fabric: neither end ever exists in ours.
		peer := "v" + name
		run(t, "ip", "-n", h.ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", fabric)
		run(t, "ip", "-n", h.ns, "addr", "add", h.ip4.String()+"/24", "dev", "eth0")
		// nodad: usable at once, instead of after duplicate detection.
		run(t, "ip", "-n", h.ns, "addr", "add", h.ip6.String()+"/64", "dev", "eth0", "nodad")
		run(t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", fabric, "link", "set", peer, "master", "br0", "up")
		hosts = append(hosts, h)
	}
	return hosts
}

// config is the usual speaker config for h, to be adjusted by the test.
func (h *host) config(asn uint32) helperConfig {
	return helperConfig{RouterID: h.ip4, ASN: asn, ListenAddr: h.ip4, NextHopV6: h.ip6}
}

// proc is one speaker process running in a host's namespace.
type proc struct {
	t    *testing.T
	h    *host
	cmd  *exec.Cmd
	in   io.WriteCloser
	dec  *json.Decoder
	mu   sync.Mutex
	done chan struct{} // closed when the process has exited and been reaped
}

// lineLog forwards a child's stderr to the test log, a line at a time.
type lineLog struct {
	t      *testing.T
	prefix string
	buf    bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.buf.Write(p)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line) // incomplete: keep for the next write
			return len(p), nil
		}
		l.t.Log(l.prefix + strings.TrimRight(line, "\n"))
	}
}

// spawn starts a speaker process in h's namespace and sends it start(cfg).
func spawn(t *testing.T, h *host, cfg helperConfig) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = &lineLog{t: t, prefix: h.name + ": "}
	// If the test binary dies, so do its speakers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, h: h, cmd: cmd, in: in, dec: json.NewDecoder(bufio.NewReader(out)), done: make(chan struct{})}
	go func() {
		// ip netns exec execs the program in place, so this is the
		// speaker's own exit.
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	if r := p.call(helperReq{Op: "start", Config: cfg}); r.Err != "" {
		t.Fatalf("%s: start: %s", h.name, r.Err)
	}
	return p
}

// kill ends the process the way a crash would: no Stop, sockets closed by
// the kernel.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (p *proc) call(req helperReq) helperResp {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	type result struct {
		r   helperResp
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r helperResp
		err := json.NewEncoder(p.in).Encode(&req)
		if err == nil {
			err = p.dec.Decode(&r)
		}
		ch <- result{r, err}
	}()
	select {
	case res := <-ch:
		if res.err != nil {
			p.t.Fatalf("%s: %s: %v", p.h.name, req.Op, res.err)
		}
		return res.r
	case <-time.After(30 * time.Second):
		p.kill() // unblocks the goroutine above
		p.t.Fatalf("%s: %s: no answer in 30s", p.h.name, req.Op)
		return helperResp{}
	}
}

func (p *proc) must(req helperReq) helperResp {
	p.t.Helper()
	r := p.call(req)
	if r.Err != "" {
		p.t.Fatalf("%s: %s: %s", p.h.name, req.Op, r.Err)
	}
	return r
}

func (p *proc) peers(ps ...Peer) { p.t.Helper(); p.must(helperReq{Op: "peers", Peers: ps}) }

func (p *proc) announce(ps ...netip.Prefix) {
	p.t.Helper()
	p.must(helperReq{Op: "announce", Prefixes: ps})
}

// learned is p's best path per prefix: prefix -> next hop.
func (p *proc) learned() map[netip.Prefix]netip.Addr {
	p.t.Helper()
	return bestOf(p.paths())
}

// paths is every path p learned, per prefix, best first.
func (p *proc) paths() map[netip.Prefix][]Path {
	p.t.Helper()
	return p.must(helperReq{Op: "learned"}).Learned
}

func bestOf(m map[netip.Prefix][]Path) map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	for pfx, paths := range m {
		if len(paths) > 0 {
			out[pfx] = paths[0].NextHop
		}
	}
	return out
}

func (p *proc) states() []calicoapi.PeerState {
	p.t.Helper()
	return p.must(helperReq{Op: "states"}).States
}

func (p *proc) state(peer netip.Addr) (calicoapi.PeerState, bool) {
	p.t.Helper()
	for _, s := range p.states() {
		if s.IP == peer.String() {
			return s, true
		}
	}
	return calicoapi.PeerState{}, false
}

// stop asks the speaker to stop (gracefully, or flushing) and waits for the
// process to exit.
func (p *proc) stop(flush bool) {
	p.t.Helper()
	p.must(helperReq{Op: "stop", Flush: flush})
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("%s: still running 15s after stop", p.h.name)
	}
}

// waitFor polls cond until it holds and returns how long that took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var detail string
	for {
		var ok bool
		ok, detail = cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not after %s; last: %s", what, timeout, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPaths waits until p's Learned is exactly want, paths in order.
func waitPaths(t *testing.T, p *proc, timeout time.Duration, want map[netip.Prefix][]Path) time.Duration {
	t.Helper()
	return waitFor(t, timeout, p.h.name+" learns "+fmt.Sprint(want), func() (bool, string) {
		got := p.paths()
		return maps.EqualFunc(got, want, slices.Equal), fmt.Sprint(got)
	})
}

// waitLearned waits until p's best paths are exactly want.
func waitLearned(t *testing.T, p *proc, timeout time.Duration, want map[netip.Prefix]netip.Addr) time.Duration {
	t.Helper()
	return waitFor(t, timeout, p.h.name+" learns "+fmt.Sprint(want), func() (bool, string) {
		got := p.learned()
		return maps.Equal(got, want), fmt.Sprint(got)
	})
}

// waitEstablished waits until p has every one of peers Established.
func waitEstablished(t *testing.T, p *proc, timeout time.Duration, peers ...*host) time.Duration {
	t.Helper()
	return waitFor(t, timeout, p.h.name+" sessions up", func() (bool, string) {
		st := p.states()
		up := map[string]bool{}
		for _, s := range st {
			up[s.IP] = s.State == "Established"
		}
		for _, h := range peers {
			if !up[h.ip4.String()] {
				return false, fmt.Sprint(st)
			}
		}
		return true, ""
	})
}
