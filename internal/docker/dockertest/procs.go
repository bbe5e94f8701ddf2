package dockertest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// proc is one process as /proc shows it. start (clock ticks since boot) tells
// a pid's incarnations apart, so we never signal a process that merely
// reused the number of one of ours.
type proc struct {
	pid, ppid int
	start     uint64
	mntNS     uint64
	cmdline   string
}

// readProc reads one process; ok is false when it is gone or unreadable.
func readProc(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return proc{}, false
	}
	// After the command name: field 3 (state) is f[0], ppid f[1], start f[19].
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid}
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	var st unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st) == nil {
		p.mntNS = st.Ino
	}
	if cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
	}
	return p, true
}

// allProcs is every process on the machine, by pid.
func allProcs() map[int]proc {
	ents, _ := os.ReadDir("/proc")
	out := make(map[int]proc, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}

// withDescendants adds to roots every process whose parent chain reaches one
// of them. Containerd's shims daemonise (their parent becomes init), so the
// caller seeds roots with them too; their containers are their children.
func withDescendants(procs map[int]proc, roots map[int]proc) map[int]proc {
	out := map[int]proc{}
	for pid, p := range roots {
		out[pid] = p
	}
	for changed := true; changed; {
		changed = false
		for pid, p := range procs {
			if _, in := out[pid]; in {
				continue
			}
			if _, parentIn := out[p.ppid]; parentIn {
				out[pid] = p
				changed = true
			}
		}
	}
	return out
}

// alive reports whether p still runs as the same incarnation. A zombie
// counts as gone: it holds no resources but a pid, and its parent (init for
// daemonised ones) reaps it.
func alive(p proc) bool {
	now, ok := readProc(p.pid)
	if !ok || now.start != p.start {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return !(i >= 0 && len(s) > i+2 && s[i+2] == 'Z')
}

// waitGone waits until none of procs is alive, or until d passes, and
// returns the ones still alive.
func waitGone(procs map[int]proc, d time.Duration) []proc {
	deadline := time.Now().Add(d)
	for {
		var left []proc
		for _, p := range procs {
			if alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			sort.Slice(left, func(i, j int) bool { return left[i].pid < left[j].pid })
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends sig to p if it is still the same incarnation.
func kill(p proc, sig syscall.Signal) {
	if alive(p) {
		syscall.Kill(p.pid, sig)
	}
}

func describe(ps []proc) string {
	var parts []string
	for _, p := range ps {
		cl := p.cmdline
		if len(cl) > 120 {
			cl = cl[:120] + "..."
		}
		parts = append(parts, fmt.Sprintf("%d (%s)", p.pid, cl))
	}
	return strings.Join(parts, ", ")
}

// mountsUnder lists mount points in this process's mount namespace at or
// below dir, deepest first (the order to unmount them in).
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir.
func unmountUnder(dir string) error {
	var errs []error
	for _, mp := range mountsUnder(dir) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// cgroupRoot is where cgroup v1 hierarchies (and the v2 one) are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupDirs lists the directories of the cgroup named parent ("/x") in every
// hierarchy, children before parents.
func cgroupDirs(parent string) []string {
	var out []string
	roots, _ := filepath.Glob(filepath.Join(cgroupRoot, "*"))
	roots = append(roots, cgroupRoot) // a pure cgroup v2 machine mounts it here
	for _, r := range roots {
		top := filepath.Join(r, parent)
		if fi, err := os.Stat(top); err != nil || !fi.IsDir() {
			continue
		}
		var sub []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				sub = append(sub, p)
			}
			return nil
		})
		// WalkDir lists parents first; remove children first.
		for i := len(sub) - 1; i >= 0; i-- {
			out = append(out, sub[i])
		}
	}
	return out
}

// removeCgroup removes the cgroup parent's directories in every hierarchy. A
// cgroup whose last process just exited can be busy for a moment, so it
// retries briefly.
func removeCgroup(parent string) error {
	// Never anything but an engine's own: rmdir would happily remove any
	// empty cgroup of someone else's.
	if !strings.HasPrefix(parent, "/"+dirPrefix) || strings.Contains(parent[1:], "/") {
		return fmt.Errorf("refusing to remove cgroup %q: not a second engine's", parent)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var errs []error
		for _, d := range cgroupDirs(parent) {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", d, err))
			}
		}
		if len(errs) == 0 || time.Now().After(deadline) {
			return errors.Join(errs...)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
