package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCPUGroupCountsChildren: a process moved into a cpuGroup and the
// child it starts afterwards (as the agent starts nft for each endpoint)
// are both counted, while the process's own scheduler time leaves the
// child out; close puts the process back where it was and removes the
// group.
func TestCPUGroupCountsChildren(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("moving a process between cgroups needs root (CI runs as root)")
	}
	g, err := newCPUGroup(fmt.Sprintf("calico-bench-test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	// The parent waits for a line, then runs a child that spins, and
	// waits for it.
	cmd := exec.Command("bash", "-c", `read x; bash -c 'for ((i=0; i<400000; i++)); do :; done'`)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	before, err := g.groupOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	u0, err := g.usage()
	if err != nil {
		t.Fatal(err)
	}
	own0, err := schedCPU(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	var own1 time.Duration
	if _, err := in.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	// The parent's own time, read while it still runs (waiting for its child).
	for range 100 {
		time.Sleep(20 * time.Millisecond)
		if s, err := schedCPU(cmd.Process.Pid); err == nil {
			own1 = s
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid)); err == nil && len(strings.TrimSpace(string(b))) == 0 && own1 > own0 {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	u1, err := g.usage()
	if err != nil {
		t.Fatal(err)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	both := time.Duration(ru.Utime.Nano() + ru.Stime.Nano()) // the parent and its waited-for child
	if both < 50*time.Millisecond {
		t.Fatalf("the child spun only %v of CPU: nothing to count", both)
	}
	if got := u1 - u0; got < both*8/10 {
		t.Errorf("group counted %v, want at least 80%% of the %v the parent and its child used", got, both)
	}
	if own := own1 - own0; own > both/2 {
		t.Errorf("the parent's own scheduler time %v holds its child's CPU (%v in all): nothing for the group to add", own, both)
	}
	if err := g.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.dir); !os.IsNotExist(err) {
		t.Errorf("group %s still there after close: %v", g.dir, err)
	}
	if before == "" {
		t.Errorf("no group recorded for the process")
	}
}
