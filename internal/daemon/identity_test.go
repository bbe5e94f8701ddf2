package daemon

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// sleeper starts a harmless process that the test owns and ends.
func sleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Process.Kill()
		c.Wait()
	})
	return c
}

// TestStopLeavesReusedPIDAlone: a pid file whose process is gone and whose
// number now belongs to another process must not get that process killed.
// Before identity records, Stop signalled whatever held the pid.
func TestStopLeavesReusedPIDAlone(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Argv: []string{"/bin/sleep", "60"}, LogFile: filepath.Join(dir, "d.log"), PIDFile: filepath.Join(dir, "d.pid")}
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	if pid, ok := Running(spec.PIDFile); !ok || pid != p.Pid {
		t.Fatalf("the daemon Start started is not seen running: %d %v", pid, ok)
	}

	// The daemon dies; its pid goes to another process (simulated by
	// writing that process's pid where the daemon's was).
	p.Kill()
	victim := sleeper(t)
	if err := os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(victim.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Same pid number as recorded, too: rewrite the record's pid so only
	// the start time tells them apart (a real reuse).
	idRec := []byte(`{"pid":` + strconv.Itoa(victim.Process.Pid) + `,"start":1,"exe":"/bin/sleep"}`)
	if err := os.WriteFile(identityFile(spec.PIDFile), idRec, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := Running(spec.PIDFile); ok {
		t.Errorf("Running believes a reused pid")
	}
	stopped, err := Stop(spec.PIDFile, time.Second)
	var reused *ReusedError
	if stopped || !errors.As(err, &reused) || reused.PID != victim.Process.Pid {
		t.Fatalf("Stop of a reused pid: stopped=%v err=%v", stopped, err)
	}
	t.Logf("Stop said: %v", err)
	if err := syscall.Kill(victim.Process.Pid, 0); err != nil {
		t.Fatalf("the process that reused the pid was signalled: %v", err)
	}
	if _, err := os.Stat(spec.PIDFile); !os.IsNotExist(err) {
		t.Errorf("stale pid file kept: %v", err)
	}

	// A pid file without a record (an older calicoctl, or written by hand)
	// is believed only for our own programs.
	if err := os.WriteFile(spec.PIDFile, []byte(strconv.Itoa(victim.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Stop(spec.PIDFile, time.Second); !errors.As(err, &reused) {
		t.Fatalf("Stop of a pid file naming sleep, without a record: %v", err)
	}
	if err := syscall.Kill(victim.Process.Pid, 0); err != nil {
		t.Fatalf("sleep was signalled: %v", err)
	}
}

// TestStopStopsItsDaemon: the honest case still works.
func TestStopStopsItsDaemon(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Argv: []string{"/bin/sleep", "60"}, LogFile: filepath.Join(dir, "d.log"), PIDFile: filepath.Join(dir, "d.pid")}
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill() })
	stopped, err := Stop(spec.PIDFile, 5*time.Second)
	if !stopped || err != nil {
		t.Fatalf("Stop: %v %v", stopped, err)
	}
	for _, f := range []string{spec.PIDFile, identityFile(spec.PIDFile)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s kept after stop", f)
		}
	}
}
