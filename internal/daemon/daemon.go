// Package daemon starts our long-running programs in the background the way
// calicoctl promises: detached, logging to a file, with a pid file, and only
// reported started once they say they are ready.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec says what to start and where its files go.
type Spec struct {
	Argv    []string
	Env     []string // added to the current environment
	LogFile string
	PIDFile string
}

// Start launches the program in its own session, so it outlives the shell
// that started it, and writes its pid file.
func Start(s Spec) (*os.Process, error) {
	if pid, alive := Running(s.PIDFile); alive {
		return nil, fmt.Errorf("already running with pid %d (pid file %s)", pid, s.PIDFile)
	}
	for _, f := range []string{s.LogFile, s.PIDFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return nil, err
		}
	}
	logf, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	// exec has completed when Start returns, so /proc shows the program.
	if err := writeIdentity(s.PIDFile, cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		os.Remove(s.PIDFile)
		return nil, err
	}
	// Reap the child when it exits, so a failed start is seen as dead, not a zombie.
	go cmd.Wait()
	return cmd.Process, nil
}

// WaitReady polls ready until it returns nil, the process dies, or timeout passes.
// On failure the error carries the end of the log, which usually says why.
func WaitReady(p *os.Process, s Spec, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = ready(); last == nil {
			return nil
		}
		if !alive(p.Pid) {
			os.Remove(s.PIDFile)
			return fmt.Errorf("it exited during start-up; %s", LogTail(s.LogFile, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Signal(syscall.SIGTERM)
	os.Remove(s.PIDFile)
	return fmt.Errorf("not ready after %s (%v); %s", timeout, last, LogTail(s.LogFile, 5))
}

// LogTail returns the last n lines of a log for an error message.
func LogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log at " + path
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "log " + path + ":\n  " + strings.Join(lines, "\n  ")
}

// Running reads a pid file and says whether the process it names is alive
// and still the one Start started (see Lookup).
func Running(pidFile string) (int, bool) {
	st := Lookup(pidFile)
	return st.PID, st.Alive
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie still answers kill(0); treat it as dead.
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false
	}
	return true
}

// Stop sends SIGTERM to the process in pidFile and waits for it to exit,
// then SIGKILL after timeout. A missing or dead process is not an error and
// returns false. A pid that now belongs to another process (the daemon died
// and the number was reused) is never signalled: Stop removes the stale pid
// file and returns a *ReusedError naming that process.
func Stop(pidFile string, timeout time.Duration) (bool, error) {
	st := Lookup(pidFile)
	if st.Reused != "" {
		forget(pidFile)
		return false, &ReusedError{PIDFile: pidFile, PID: st.PID, Other: st.Reused}
	}
	if !st.Alive {
		forget(pidFile)
		return false, nil
	}
	pid := st.PID
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			forget(pidFile)
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Still the same process: it has not exited, so its pid cannot have
	// been reused.
	syscall.Kill(pid, syscall.SIGKILL)
	forget(pidFile)
	return true, nil
}

// forget removes a pid file and its identity record.
func forget(pidFile string) {
	os.Remove(pidFile)
	os.Remove(identityFile(pidFile))
}
