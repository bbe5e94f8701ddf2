package cli

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelp asks every command for --help (no datastore needed: the
// environment names a closed port) and generates bash completion.
func TestHelp(t *testing.T) {
	t.Parallel()
	env := map[string]string{"ETCD_AUTHORITY": fmt.Sprintf("127.0.0.1:%d", freePort(t))}

	// Walk the command tree through the help text itself.
	seen := map[string]bool{}
	var walk func(path []string)
	walk = func(path []string) {
		key := strings.Join(path, " ")
		if seen[key] {
			return
		}
		seen[key] = true
		r := ctl(t, env, "", append(append([]string{}, path...), "--help")...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("--help failed:\n%s", r)
			return
		}
		if !strings.Contains(r.stdout, "Usage:") || !strings.Contains(r.stdout, strings.TrimSpace("calicoctl "+key)) {
			t.Errorf("calicoctl %s --help lacks usage:\n%s", key, r.stdout)
		}
		if r.elapsed > 3*time.Second {
			t.Errorf("calicoctl %s --help took %s: does it contact the datastore?", key, r.elapsed)
		}
		_, list, ok := strings.Cut(r.stdout, "Available Commands:\n")
		if !ok {
			return
		}
		list, _, _ = strings.Cut(list, "\n\n")
		for _, line := range strings.Split(list, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				walk(append(append([]string{}, path...), f[0]))
			}
		}
	}
	walk(nil)

	for _, want := range []string{
		"datastore start", "datastore stop",
		"pool add", "pool remove", "pool show",
		"profile",
		"bgp default-node-as", "bgp node-mesh", "bgp peer add", "bgp peer remove", "bgp peer show",
		"node", "node show", "node stop", "node remove",
		"node bgp peer add", "node bgp peer remove", "node bgp peer show",
		"container", "endpoint show", "status",
		"ipam show", "ipam info", "ipam release", "ipam check",
		"version", "completion bash", "demo",
	} {
		if !seen[want] {
			t.Errorf("command %q not reached through --help (reached %d commands)", want, len(seen))
		}
	}
	t.Logf("--help ran on %d commands", len(seen))

	// The hand-parsed commands answer -h and a bare invocation with help too.
	for _, args := range [][]string{{"profile", "-h"}, {"container", "-h"}, {"profile"}, {"container"}} {
		r := ctl(t, env, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || r.elapsed > 3*time.Second {
			t.Errorf("help for %q:\n%s", args, r)
		}
	}

	r := ctl(t, env, "", "completion", "bash")
	if r.code != 0 || len(r.stdout) < 100 || !strings.Contains(r.stdout, "calicoctl") || r.stderr != "" {
		t.Errorf("completion bash:\n%.300s", r)
	}
}

// TestDatastoreLifecycle starts, restarts, stops and re-stops a datastore.
func TestDatastoreLifecycle(t *testing.T) {
	t.Parallel()
	s := startStore(t)
	pidFile := filepath.Join(s.dataDir, "etcd.pid")
	pid := readPID(t, pidFile)
	s.ok("pool", "add", "10.70.0.0/16", "--vxlan")

	// A second start on the same data dir, on any port, is refused and
	// leaves the running one alone.
	for _, port := range []int{s.port, freePort(t)} {
		r := ctl(t, nil, "", "datastore", "start", "--listen", "127.0.0.1:"+strconv.Itoa(port),
			"--peer-listen", "127.0.0.1:"+strconv.Itoa(freePort(t)), "--data-dir", s.dataDir, "--timeout", "10s")
		want := fmt.Sprintf("error: datastore in %s: already running with pid %d", s.dataDir, pid)
		if r.code == 0 || !strings.HasPrefix(r.stderr, want) || strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("second start: want one line starting %q:\n%s", want, r)
		}
		if got := readPID(t, pidFile); got != pid {
			t.Errorf("pid file now says %d, want %d", got, pid)
		}
		if port != s.port && portOpen(port) {
			t.Errorf("refused start left something listening on %d", port)
		}
	}
	if !strings.Contains(s.ok("pool", "show"), "10.70.0.0/16") {
		t.Error("datastore unusable after a refused second start")
	}

	// Stop: the process exits, the port closes, the pid file goes.
	r := ctl(t, nil, "", "datastore", "stop", "--data-dir", s.dataDir)
	if r.code != 0 || r.stdout != "Datastore stopped\n" {
		t.Fatalf("stop:\n%s", r)
	}
	if processAlive(pid) {
		t.Errorf("etcd pid %d still alive after stop", pid)
	}
	if portOpen(s.port) {
		t.Errorf("port %d still open after stop", s.port)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid file after stop: %v", err)
	}

	// Stop again: a clear one-line error.
	r = ctl(t, nil, "", "datastore", "stop", "--data-dir", s.dataDir)
	want := fmt.Sprintf("error: no datastore running for data dir %s (no live pid in %s)\n", s.dataDir, pidFile)
	if r.code == 0 || r.stderr != want || r.stdout != "" {
		t.Errorf("second stop: want %q:\n%s", want, r)
	}

	// Start again on the same data dir: the data is still there.
	port, peer := freePort(t), freePort(t)
	r = ctl(t, nil, "", "datastore", "start", "--listen", "127.0.0.1:"+strconv.Itoa(port),
		"--peer-listen", "127.0.0.1:"+strconv.Itoa(peer), "--data-dir", s.dataDir, "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("restart:\n%s", r)
	}
	s.port = port
	var pools []poolJSON
	s.okJSON(&pools, "pool", "show", "-o", "json")
	if len(pools) != 1 || pools[0] != (poolJSON{"10.70.0.0/16", "Never", "Always", false, 26, false}) {
		t.Errorf("pools after restart: %+v", pools)
	}
	// (the cleanup registered by startStore stops this one)

	// A port that is taken: the start fails with the reason, and leaves no
	// process or pid file behind.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	t.Cleanup(func() { stopStore(t, dir) })
	r = ctl(t, nil, "", "datastore", "start", "--listen", "127.0.0.1:"+strconv.Itoa(busy),
		"--peer-listen", "127.0.0.1:"+strconv.Itoa(freePort(t)), "--data-dir", dir, "--timeout", "10s")
	if r.code == 0 || !strings.HasPrefix(r.stderr, fmt.Sprintf("error: datastore on 127.0.0.1:%d did not start", busy)) ||
		!strings.Contains(r.stderr, "address already in use") {
		t.Errorf("start on a busy port:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd.pid")); !os.IsNotExist(err) {
		t.Errorf("failed start left a pid file: %v", err)
	}
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %q", file, b)
	}
	return pid
}

func processAlive(pid int) bool {
	deadline := time.Now().Add(2 * time.Second)
	for {
		if err := syscall.Kill(pid, 0); err != nil {
			return false
		}
		// A zombie is as good as dead (its parent, calicoctl, has exited,
		// so init reaps it shortly).
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				return false
			}
		}
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
}
