package security

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/daemon"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// deadlineLimit is what the issue promises: a clear error within 10 s.
const deadlineLimit = 10 * time.Second

// TestDatastoreDeadlines: etcd frozen (SIGSTOP: connections hang instead of
// being refused, the hardest case for a client) before a command, and in
// the middle of `container add` right after it claimed an address. Every
// command fails within 10 s with one line saying the datastore does not
// answer; nothing is left on the host (no cali* interface, no eth0 in the
// workload); once etcd runs again `ipam check` shows at most the one claim
// the add could not give back, the rerun of the add succeeds, and removing
// the workload leaves IPAM clean.
//
// Before: the first case failed after 5 s (the client already had
// per-call deadlines), but in the second the failed add's undo released its
// address with the caller's context, which in calicoctl has no deadline:
// calicoctl hung until killed.
func TestDatastoreDeadlines(t *testing.T) {
	w := world(t, walkthrough.Options{}, false)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1 := w.Hosts[0]
	ctl(t, ctx, w, h1, "pool", "add", walkthrough.Pool)
	etcdPID, ok := daemon.Running(filepath.Join(w.StateDir, "etcd", "etcd.pid"))
	if !ok {
		t.Fatal("no datastore pid")
	}
	frozen := false
	freeze := func() {
		if err := syscall.Kill(etcdPID, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP etcd (pid %d): %v", etcdPID, err)
		}
		frozen = true
	}
	thaw := func() {
		if frozen {
			syscall.Kill(etcdPID, syscall.SIGCONT)
			frozen = false
		}
	}
	t.Cleanup(thaw) // before the world's cleanup, which needs etcd
	ns, err := w.Lab.AddWorkloadNetns(h1, "w9")
	if err != nil {
		t.Fatal(err)
	}
	nothingLeft := func(when string) {
		t.Helper()
		if out, _ := h1.Run(ctx, "ip", "-o", "link", "show"); caliIface.MatchString(out) {
			t.Errorf("%s: a workload interface is left on host1:\n%s", when, out)
		}
		if out, err := ns.Run(ctx, "ip", "-o", "link", "show", "eth0"); err == nil {
			t.Errorf("%s: the workload namespace has eth0:\n%s", when, out)
		}
	}
	oneClearLine := func(what, out string, took time.Duration) {
		t.Helper()
		msg := strings.TrimSpace(out)
		if took > deadlineLimit {
			t.Errorf("%s took %s; want a failure within %s", what, took.Round(time.Millisecond), deadlineLimit)
		}
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "cannot reach the datastore at http://"+w.Etcd) || !strings.Contains(msg, "no answer within") {
			t.Errorf("%s: want one line saying the datastore at %s does not answer, got:\n%s", what, w.Etcd, msg)
		}
	}

	// 1. Frozen before the commands start.
	freeze()
	for _, args := range [][]string{
		{"container", "add", "w9", "auto", "--netns", ns.Path},
		{"ipam", "show"},
		{"profile", "add", "P9"},
	} {
		start := time.Now()
		out, err := w.Ctl(ctx, h1, args...)
		took := time.Since(start)
		t.Logf("FIGURE: etcd frozen: `calicoctl %s` failed=%v after %.1f s: %s", strings.Join(args[:2], " "), err != nil, took.Seconds(), lastLine(out))
		if err == nil {
			t.Errorf("calicoctl %s succeeded with etcd frozen", strings.Join(args, " "))
			continue
		}
		oneClearLine("calicoctl "+strings.Join(args[:2], " "), lastLine(out), took)
	}
	nothingLeft("etcd frozen before container add")
	thaw()

	// 2. Frozen in the middle of `container add`: the moment its address
	// claim lands in etcd, calicoctl is paused, etcd frozen, and calicoctl
	// let go on.
	watcher := e2etest.EtcdFrom(t, w.Hosts[1], w.Etcd)
	var name string
	var took time.Duration
	var out string
	for attempt := 1; ; attempt++ {
		name = fmt.Sprintf("w9-%d", attempt)
		var failed bool
		out, took, failed = addFrozenMidway(t, ctx, w, watcher, h1, ns, name, freeze, etcdPID)
		if failed {
			break
		}
		// The add finished before the freeze: undo it and try again.
		thaw()
		ctl(t, ctx, w, h1, "container", "remove", name)
		if attempt == 3 {
			t.Fatalf("three adds finished before etcd could be frozen; last: %s", out)
		}
	}
	t.Logf("FIGURE: etcd frozen after the address claim: `calicoctl container add %s` failed after %.1f s (from the freeze): %s", name, took.Seconds(), lastLine(out))
	oneClearLine("container add with etcd frozen midway", lastLine(out), took)
	nothingLeft("etcd frozen in the middle of container add")
	thaw()
	// etcd may take a moment to serve again after a long pause.
	back := e2etest.WaitFor(t, 30*time.Second, "the datastore answers again", func() (bool, string) {
		out, err := w.Ctl(ctx, h1, "ipam", "show")
		return err == nil, out
	})
	t.Logf("datastore answered again %s after SIGCONT", back.Round(time.Millisecond))

	// Once etcd answers: at most the claim the add could not give back.
	// (ipam check exits non-zero when it finds anything.)
	check, _ := w.Ctl(ctx, h1, "ipam", "check")
	leaked := 0
	for _, l := range strings.Split(strings.TrimSpace(check), "\n") {
		switch {
		case strings.HasPrefix(l, "leaked: "):
			leaked++
			if !strings.Contains(l, "held by host1~"+name) {
				t.Errorf("ipam check reports a leak other than the frozen add's claim: %s", l)
			}
		case strings.HasPrefix(l, "problem: ") || strings.Contains(l, "cannot reach"):
			t.Errorf("ipam check: %s", l)
		}
	}
	if leaked > 1 {
		t.Errorf("ipam check: %d leaked addresses, want at most the one claim:\n%s", leaked, check)
	}
	t.Logf("FIGURE: after etcd came back, ipam check lists %d leaked claim(s) of the frozen add:\n%s", leaked, check)
	// The rerun works, the workload is wired, and its removal leaves IPAM clean.
	ctl(t, ctx, w, h1, "container", "add", name, "auto", "--netns", ns.Path)
	if out, err := ns.Run(ctx, "ip", "-o", "addr", "show", "eth0"); err != nil || !strings.Contains(out, "192.168.100.") {
		t.Errorf("the rerun's workload has no pool address: %v %s", err, out)
	}
	ctl(t, ctx, w, h1, "container", "remove", name)
	if check, err := w.Ctl(ctx, h1, "ipam", "check"); err != nil || strings.Contains(check, "leaked:") || strings.Contains(check, "problem:") {
		t.Errorf("ipam check after remove:\n%s", check)
	}
	nothingLeft("after container remove")
}

var caliIface = regexp.MustCompile(`(?m)^\d+: cali[0-9a-f]{11}[@:]`)

// addFrozenMidway runs `container add name auto` on h and freezes etcd as
// soon as the add's address claim is written. failed is false when the add
// finished first (a fast machine); took counts from the freeze.
func addFrozenMidway(t *testing.T, ctx context.Context, w *walkthrough.World, watcher *clientv3.Client, h *lab.Host, ns *lab.Netns, name string, freeze func(), etcdPID int) (out string, took time.Duration, failed bool) {
	t.Helper()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := watcher.Watch(wctx, datastore.HandleKey("host1~"+name))
	argv := append([]string{"env"}, w.EtcdEnv...)
	argv = append(argv, "CALICO_NODENAME="+h.Label, "CALICO_STATE_DIR="+w.StateDir, "DOCKER_HOST=none",
		filepath.Join(e2etest.BinDir, "calicoctl"), "container", "add", name, "auto", "--netns", ns.Path)
	var buf strings.Builder
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	p, err := h.StartCmd(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	select {
	case ev := <-events:
		if ev.Err() != nil {
			t.Fatalf("watching the claim: %v", ev.Err())
		}
		syscall.Kill(p.Pid, syscall.SIGSTOP)
		freeze()
		syscall.Kill(p.Pid, syscall.SIGCONT)
	case <-p.Done():
		return buf.String(), 0, p.Wait() != nil
	case <-time.After(30 * time.Second):
		t.Fatalf("container add %s made no claim within 30 s", name)
	}
	start := time.Now()
	select {
	case <-p.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("container add %s still runs 60 s after etcd was frozen", name)
	}
	return buf.String(), time.Since(start), p.Wait() != nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 && strings.HasPrefix(s[i+1:], "error: ") {
		return s[i+1:]
	}
	return s
}
