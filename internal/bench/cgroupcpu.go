package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuGroup is a CPU-accounting cgroup of the bench's own that an agent is
// moved into, so its CPU time counts the processes it runs too: every
// endpoint the agent programs runs nft once, and a process's own
// counters (its threads' schedstat, its ticks) leave that out, while
// cpuacct (cgroup v1) or cpu.stat (v2) count every task of the group,
// children included, to the nanosecond or microsecond.
type cpuGroup struct {
	dir    string // the group's directory
	root   string // the hierarchy's root
	v2     bool
	origin string // the group (below root) the process added came from
}

// newCPUGroup makes a group called name in the cpuacct (v1) or the
// unified (v2, cpu controller) hierarchy.
func newCPUGroup(name string) (*cpuGroup, error) {
	root, v2, err := cpuHierarchy()
	if err != nil {
		return nil, err
	}
	g := &cpuGroup{dir: filepath.Join(root, name), root: root, v2: v2}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: CPU accounting group: %w", err)
	}
	return g, nil
}

// cpuHierarchy finds where CPU accounting is mounted: a v1 hierarchy with
// cpuacct, else a v2 one whose root offers the cpu controller.
func cpuHierarchy() (root string, v2 bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	var unified string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, p := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(p) < 3 {
			continue
		}
		switch p[0] {
		case "cgroup":
			if f[3] == "/" && containsOpt(p[2], "cpuacct") {
				return f[4], false, nil
			}
		case "cgroup2":
			if f[3] == "/" {
				unified = f[4]
			}
		}
	}
	if unified != "" {
		if b, err := os.ReadFile(filepath.Join(unified, "cgroup.controllers")); err == nil && containsOpt(strings.ReplaceAll(strings.TrimSpace(string(b)), " ", ","), "cpu") {
			return unified, true, nil
		}
	}
	return "", false, errors.New("bench: no cgroup hierarchy accounts CPU (cpuacct in v1, cpu in v2)")
}

func containsOpt(opts, want string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		if o == want {
			return true
		}
	}
	return false
}

// add moves process pid (all its threads) into the group; what it starts
// afterwards starts there.
func (g *cpuGroup) add(pid int) error {
	origin, err := g.groupOf(pid)
	if err != nil {
		return err
	}
	g.origin = origin
	if err := os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("bench: moving %d into %s: %w", pid, g.dir, err)
	}
	return nil
}

// groupOf is the group of pid in this hierarchy, as /proc/PID/cgroup
// names it ("/" for the root).
func (g *cpuGroup) groupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		// ID:CONTROLLERS:PATH; v2's is 0::PATH.
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if g.v2 && f[0] == "0" && f[1] == "" || !g.v2 && containsOpt(f[1], "cpuacct") {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("bench: /proc/%d/cgroup names no CPU accounting group", pid)
}

// usage is the CPU time every task of the group used while in it.
func (g *cpuGroup) usage() (time.Duration, error) {
	if !g.v2 {
		b, err := os.ReadFile(filepath.Join(g.dir, "cpuacct.usage"))
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return time.Duration(ns), err
	}
	b, err := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("bench: no usage_usec in %s/cpu.stat", g.dir)
}

// close moves what is still in the group back to where the process added
// came from and removes the group.
func (g *cpuGroup) close() error {
	if g == nil {
		return nil
	}
	back := filepath.Join(g.root, g.origin)
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err == nil {
		for p := range strings.FieldsSeq(string(b)) {
			// A task that exits meanwhile is gone from the group anyway.
			_ = os.WriteFile(filepath.Join(back, "cgroup.procs"), []byte(p), 0o644)
		}
	}
	if err := os.Remove(g.dir); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("bench: removing CPU accounting group: %w", err)
	}
	return nil
}
