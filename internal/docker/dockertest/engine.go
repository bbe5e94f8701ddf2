package dockertest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dirPrefix names every second engine's temp dir (and its cgroup parent), so
// Sweep can recognise what a crashed run left behind.
const dirPrefix = "calico-dockerd-"

// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
var StopTimeout = 15 * time.Second

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// EngineOptions configure a second engine.
type EngineOptions struct {
	// NetnsPath is the network namespace to run it in, e.g. a lab host's
	// Path (/run/netns/<name>). Required.
	NetnsPath string
	// Name is a short label ("host2") that goes into its directory's name.
	Name string
	// IPForward lets dockerd turn on ip_forward in the namespace, as it does
	// on a real Docker host. Off by default: the namespace stays as the lab
	// made it, so tests see what the agent itself turns on.
	IPForward bool
	// Args are extra dockerd flags.
	Args []string
	// StartTimeout bounds the wait for the engine's first answer (default 60 s).
	StartTimeout time.Duration
}

// Engine is a second dockerd running inside a network namespace, with every
// file it owns under Dir, and a mount namespace of its own in which
// /run/docker/plugins and /etc/docker/plugins are PluginDir: it discovers
// the plugins put there and no others, and the machine's engine never sees
// them.
type Engine struct {
	*Client // its API; Client.Host is the -H value for the docker CLI

	Name         string
	NetnsPath    string
	Dir          string // everything below: removed by Stop
	PluginDir    string // put plugin sockets (.sock) and spec files (.spec, .json) here
	DataRoot     string
	ExecRoot     string
	LogPath      string
	PidFile      string
	CgroupParent string // "/<base of Dir>" in every cgroup hierarchy
	Pid          int    // dockerd's

	StartDuration time.Duration // from exec to the first answer to /_ping
	StopDuration  time.Duration // Stop from start to end, containers removal included

	mntNS    uint64 // its mount namespace, shared by containerd and the shims
	cmd      *exec.Cmd
	ours     map[int]proc // its processes, as recorded by Stop before signalling
	done     chan struct{}
	stopOnce sync.Once
	stopErr  error
	logTail  string // kept by Stop, since the log file goes with Dir
}

// StartEngine starts a second engine for a test and stops it (containers,
// containerd, shims, mounts, cgroups, files) when the test ends. It fails
// the test, never skips it, when the engine cannot start.
func StartEngine(t testing.TB, opts EngineOptions) *Engine {
	t.Helper()
	ctx := context.Background()
	e, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd %s log (tail):\n%s", e.Name, e.Log(40))
		}
		if err := e.Stop(); err != nil {
			t.Errorf("stopping dockerd %s: %v", e.Name, err)
		}
		t.Logf("dockerd %s: started in %v, stopped in %v", e.Name, e.StartDuration.Round(time.Millisecond), e.StopDuration.Round(time.Millisecond))
	})
	return e
}

// Start starts a second engine. The caller must call Stop.
func Start(ctx context.Context, opts EngineOptions) (_ *Engine, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("dockertest: a second dockerd needs root (network and mount namespaces); run the tests as root")
	}
	if opts.NetnsPath == "" {
		return nil, errors.New("dockertest: EngineOptions.NetnsPath is required (a lab host's Path)")
	}
	if _, err := os.Stat(opts.NetnsPath); err != nil {
		return nil, fmt.Errorf("dockertest: network namespace %s: %v", opts.NetnsPath, err)
	}
	if opts.Name == "" {
		opts.Name = "engine"
	}
	if !nameRE.MatchString(opts.Name) {
		return nil, fmt.Errorf("dockertest: engine name %q: use at most 20 lower-case letters, digits or '-'", opts.Name)
	}
	for _, bin := range []string{"dockerd", "containerd", "nsenter", "unshare", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("dockertest: %s is not installed (a second engine needs the docker.io, containerd and util-linux packages)", bin)
		}
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}

	dir, err := os.MkdirTemp("", dirPrefix+opts.Name+"-")
	if err != nil {
		return nil, fmt.Errorf("dockertest: %v", err)
	}
	e := &Engine{
		Name: opts.Name, NetnsPath: opts.NetnsPath, Dir: dir,
		PluginDir:    filepath.Join(dir, "plugins"),
		DataRoot:     filepath.Join(dir, "data"),
		ExecRoot:     filepath.Join(dir, "exec"),
		LogPath:      filepath.Join(dir, "dockerd.log"),
		PidFile:      filepath.Join(dir, "dockerd.pid"),
		CgroupParent: "/" + filepath.Base(dir),
		done:         make(chan struct{}),
	}
	sock := filepath.Join(dir, "docker.sock")
	if e.Client, err = NewClient("unix://" + sock); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	if err := e.prepare(); err != nil {
		return nil, err
	}

	args := []string{
		"--config-file=" + filepath.Join(dir, "daemon.json"), // not the machine's /etc/docker/daemon.json
		"--data-root=" + e.DataRoot,
		"--exec-root=" + e.ExecRoot,
		"-H", e.Client.Host,
		"--pidfile=" + e.PidFile,
		"--bridge=none",
		"--iptables=false",
		"--ip-masq=false",
		"--ip-forward=" + strconv.FormatBool(opts.IPForward),
		"--storage-driver=vfs", // fuse-overlayfs and overlay on overlay may not nest; vfs works anywhere
		"--cgroup-parent=" + e.CgroupParent,
		"--shutdown-timeout=5",
	}
	args = append(args, opts.Args...)
	log, err := os.OpenFile(e.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dockertest: %v", err)
	}
	defer log.Close()
	// nsenter and unshare exec (no fork), and so does the script's last
	// line: the pid we start is dockerd's.
	cmd := exec.Command("nsenter", "--net="+opts.NetnsPath, "--",
		"unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", e.script(args))
	cmd.Stdout, cmd.Stderr = log, log
	// Own process group: a ^C at the terminal reaches the test, which then
	// stops the engine in order. Pdeathsig: if the test process dies
	// outright, dockerd shuts down (and stops its containerd) by itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	began := time.Now()
	if err := startUnlocked(cmd); err != nil {
		return nil, fmt.Errorf("dockertest: starting dockerd: %v", err)
	}
	e.Pid, e.cmd = cmd.Process.Pid, cmd
	go func() {
		cmd.Wait()
		close(e.done)
	}()

	if err := e.waitReady(ctx, opts.StartTimeout); err != nil {
		return nil, err
	}
	e.StartDuration = time.Since(began)

	// Record its mount namespace now, to find containerd and the shims at
	// Stop, and check that it really runs where it was asked to.
	var mnt, net, want, own unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", e.Pid), &mnt); err != nil {
		return nil, fmt.Errorf("dockertest: dockerd %s: %v", e.Name, err)
	}
	if err := unix.Stat("/proc/self/ns/mnt", &own); err == nil && own.Ino == mnt.Ino {
		return nil, fmt.Errorf("dockertest: dockerd %s runs in the caller's mount namespace; unshare --mount did not take", e.Name)
	}
	e.mntNS = mnt.Ino
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", e.Pid), &net) != nil || unix.Stat(opts.NetnsPath, &want) != nil || net.Ino != want.Ino {
		return nil, fmt.Errorf("dockertest: dockerd %s is not in network namespace %s", e.Name, opts.NetnsPath)
	}
	return e, nil
}

// prepare makes the directory layout and the owner record Sweep reads.
func (e *Engine) prepare() error {
	for _, d := range []string{e.PluginDir, e.DataRoot, e.ExecRoot, e.etcDir(), filepath.Join(e.etcDir(), "plugins"), e.emptyDir(), e.sysDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("dockertest: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.Dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return fmt.Errorf("dockertest: %v", err)
	}
	start, err := startTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("dockertest: %v", err)
	}
	return os.WriteFile(filepath.Join(e.Dir, "owner"), fmt.Appendf(nil, "%d %d\n", os.Getpid(), start), 0o644)
}

func (e *Engine) etcDir() string   { return filepath.Join(e.Dir, "etc-docker") }
func (e *Engine) emptyDir() string { return filepath.Join(e.Dir, "empty") }
func (e *Engine) sysDir() string   { return filepath.Join(e.Dir, "host-sys") }

// script is what runs in the new mount namespace before dockerd. Mounts made
// here are private to the engine (and its containerd and shims) and vanish
// with the namespace when the last of them exits.
func (e *Engine) script(args []string) string {
	q := shellQuote
	lines := []string{
		"set -e",
		// A sysfs of the engine's network namespace (as `ip netns exec`
		// mounts one), keeping the cgroup hierarchies mounted below it:
		// `ip netns exec` itself loses them, and dockerd needs them.
		"mount --rbind /sys " + q(e.sysDir()),
		"mount -t sysfs sysfs /sys",
		"mount --rbind " + q(e.sysDir()+"/fs/cgroup") + " /sys/fs/cgroup",
		"umount -l " + q(e.sysDir()),
		// A /run of its own: plugin discovery looks in /run/docker/plugins,
		// shims put their sockets in /run/containerd, and other labs'
		// /run/netns mounts are better not held by us.
		"mount -t tmpfs -o mode=0755 calico-dockertest /run",
		"mkdir -p /run/docker/plugins /run/containerd",
		"mount --bind " + q(e.PluginDir) + " /run/docker/plugins",
		// Its own /etc/docker: trust key (key.json), and spec files from
		// PluginDir via /etc/docker/plugins. (A machine with Docker has
		// /etc/docker; the mkdir only matters on one without.)
		"mkdir -p /etc/docker",
		"mount --bind " + q(e.etcDir()) + " /etc/docker",
		"mount --bind " + q(e.PluginDir) + " /etc/docker/plugins",
		"if [ -d /usr/lib/docker/plugins ]; then mount --bind " + q(e.emptyDir()) + " /usr/lib/docker/plugins; fi",
		"exec dockerd " + strings.Join(mapStrings(args, q), " "),
	}
	return strings.Join(lines, "\n")
}

func mapStrings(in []string, f func(string) string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = f(s)
	}
	return out
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// waitReady polls /_ping until the engine answers, it exits, or d passes.
func (e *Engine) waitReady(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		err := e.Ping(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-e.done:
			return fmt.Errorf("dockertest: dockerd %s exited before answering on %s; its log ends:\n%s", e.Name, e.Socket, e.Log(25))
		case <-ctx.Done():
			return fmt.Errorf("dockertest: dockerd %s did not answer on %s within %v; its log ends:\n%s", e.Name, e.Socket, d, e.Log(25))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Log returns the last n lines of the engine's log.
func (e *Engine) Log(n int) string {
	b, err := os.ReadFile(e.LogPath)
	s := string(b)
	if err != nil {
		s = e.logTail
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop removes the engine's containers, stops dockerd (SIGTERM, SIGKILL
// after StopTimeout), makes sure containerd, the shims and the containers'
// processes are gone, unmounts anything left under Dir, removes the cgroup
// parent and Dir. It keeps going after errors and returns them all; it
// reports anything it could not remove. Calling it again returns the first
// result.
func (e *Engine) Stop() error {
	e.stopOnce.Do(func() { e.stopErr = e.stop() })
	return e.stopErr
}

func (e *Engine) stop() error {
	began := time.Now()
	defer func() { e.StopDuration = time.Since(began) }()
	var errs []error

	// Containers first, through the API: dockerd's own shutdown would wait
	// out each one's stop timeout, and an idle sh ignores SIGTERM.
	if e.Pid != 0 && e.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if ids, err := e.ContainerIDs(ctx, ""); err == nil {
			var wg sync.WaitGroup
			rerr := make([]error, len(ids))
			for i, id := range ids {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := e.Remove(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
						rerr[i] = err
					}
				}()
			}
			wg.Wait()
			errs = append(errs, rerr...)
		} else {
			errs = append(errs, err)
		}
		cancel()
	}

	// Who belongs to this engine, recorded while dockerd still lives:
	// everything in its mount namespace (dockerd, containerd, and the
	// shims, which daemonise away from dockerd's tree), and their
	// descendants (containers, execs, docker-init). Those naming Dir too,
	// in case Start failed before it recorded the mount namespace.
	procs := allProcs()
	ours := map[int]proc{}
	for pid, p := range procs {
		if (e.mntNS != 0 && p.mntNS == e.mntNS) || pid == e.Pid || strings.Contains(p.cmdline, e.Dir+"/") {
			ours[pid] = p
		}
	}
	ours = withDescendants(procs, ours)

	e.ours = ours
	if e.cmd != nil {
		// Through os.Process (a pidfd): never signals a reused pid.
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(StopTimeout):
			errs = append(errs, fmt.Errorf("dockerd %s ignored SIGTERM for %v; killed it", e.Name, StopTimeout))
			e.cmd.Process.Kill()
			<-e.done
		}
	}
	// dockerd stops its containerd on the way out; anything still here
	// after a grace period is killed.
	ours = maps.Clone(ours)
	delete(ours, e.Pid)
	if left := waitGone(ours, 10*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes of dockerd %s outlived it and were killed: %s", e.Name, describe(left)))
		for _, p := range left {
			kill(p, syscall.SIGKILL)
		}
		if left := waitGone(ours, 5*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes of dockerd %s survive SIGKILL: %s", e.Name, describe(left)))
		}
	}

	e.logTail = e.Log(200)
	errs = append(errs, removeEngineFiles(e.Dir))
	if left := e.Leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("dockerd %s left behind: %s", e.Name, strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// running reports whether dockerd has not exited yet.
func (e *Engine) running() bool {
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// removeEngineFiles unmounts what is left under dir in our mount namespace
// (normally nothing: the engine mounted in its own), removes its cgroup
// parent and dir itself.
func removeEngineFiles(dir string) error {
	var errs []error
	errs = append(errs, unmountUnder(dir))
	errs = append(errs, removeCgroup(cgroupOf(dir)))
	if len(mountsUnder(dir)) == 0 { // never RemoveAll through a mount
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// cgroupOf is the cgroup parent of the engine whose dir this is.
func cgroupOf(dir string) string { return "/" + filepath.Base(dir) }

// Leftovers describes anything of this engine still on the machine:
// processes (in its mount namespace, or naming its directory), mounts under
// its directory, cgroups, the directory itself. Empty after a clean Stop.
func (e *Engine) Leftovers() []string {
	var out []string
	// Once the engine is stopped its mount namespace's inode number may be
	// reused by an unrelated namespace: then only the processes recorded by
	// Stop, and those naming Dir, count.
	var ps []proc
	stopped := e.ours != nil
	for _, p := range allProcs() {
		rec, recorded := e.ours[p.pid]
		switch {
		case strings.Contains(p.cmdline, e.Dir+"/"),
			!stopped && e.mntNS != 0 && p.mntNS == e.mntNS,
			recorded && rec.start == p.start && alive(p):
			ps = append(ps, p)
		}
	}
	if len(ps) > 0 {
		out = append(out, "processes "+describe(ps))
	}
	if m := mountsUnder(e.Dir); len(m) > 0 {
		out = append(out, "mounts "+strings.Join(m, ", "))
	}
	if c := cgroupDirs(e.CgroupParent); len(c) > 0 {
		out = append(out, "cgroups "+strings.Join(c, ", "))
	}
	if _, err := os.Stat(e.Dir); err == nil {
		out = append(out, "directory "+e.Dir)
	}
	return out
}

// Sweep removes what second engines of crashed runs left behind: for every
// engine directory whose creating process is gone, it kills the processes
// naming that directory (dockerd, containerd, shims) and their descendants,
// then removes mounts, cgroup and directory. Engines of live processes are
// left alone.
func Sweep() error {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	var errs []error
	for _, dir := range dirs {
		if ownerAlive(filepath.Join(dir, "owner")) {
			continue
		}
		procs := allProcs()
		roots := map[int]proc{}
		for pid, p := range procs {
			if strings.Contains(p.cmdline, dir+"/") {
				roots[pid] = p
			}
		}
		ours := withDescendants(procs, roots)
		for _, p := range ours {
			kill(p, syscall.SIGKILL)
		}
		if left := waitGone(ours, 5*time.Second); len(left) > 0 {
			errs = append(errs, fmt.Errorf("dockertest sweep: %s: processes survive SIGKILL: %s", dir, describe(left)))
			continue
		}
		if err := removeEngineFiles(dir); err != nil {
			errs = append(errs, fmt.Errorf("dockertest sweep: %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// ownerAlive reports whether the process named in an engine's owner record
// still runs. A missing or malformed record is treated as alive for a minute
// after the directory was made (the record may be being written).
func ownerAlive(rec string) bool {
	b, err := os.ReadFile(rec)
	var pid int
	var start uint64
	if err == nil {
		_, err = fmt.Sscan(string(b), &pid, &start)
	}
	if err != nil || pid <= 0 {
		fi, serr := os.Stat(filepath.Dir(rec))
		return serr == nil && time.Since(fi.ModTime()) < time.Minute
	}
	got, err := startTime(pid)
	return err == nil && got == start
}

func startTime(pid int) (uint64, error) {
	p, ok := readProc(pid)
	if !ok {
		return 0, fmt.Errorf("process %d is gone", pid)
	}
	return p.start, nil
}

// startUnlocked starts cmd from a fresh goroutine. Pdeathsig fires when the
// *thread* that forked exits; a fresh goroutine is never on a thread locked
// by someone else's LockOSThread, and Go only retires such locked threads.
func startUnlocked(cmd *exec.Cmd) error {
	ch := make(chan error, 1)
	go func() { ch <- cmd.Start() }()
	return <-ch
}
