package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A pid alone does not name a process for long: once the daemon exits, the
// kernel hands its number to the next process, and a stale pid file would
// have `node stop` kill whatever got it. So Start records, beside the pid
// file, the process's start time (in clock ticks since boot: together with
// the pid unique until reboot) and its program, and every reader of the pid
// file checks them before believing it. The pid file itself keeps its plain
// format (the pid and a newline) for the scripts and tests that read it.
type identity struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // /proc/PID/stat field 22
	Exe   string `json:"exe"`   // /proc/PID/exe when started
}

// ourPrograms are the executables a pid file without an identity record
// (written by an older calicoctl) may name; anything else is not ours.
var ourPrograms = []string{"calico-node", "calicoctl", "calico-datastore"}

// identityFile is where the identity of pidFile's process is kept.
func identityFile(pidFile string) string { return pidFile + ".id" }

func writeIdentity(pidFile string, pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("reading the new process's start time: %v", err)
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	b, _ := json.Marshal(identity{PID: pid, Start: start, Exe: exe})
	return os.WriteFile(identityFile(pidFile), append(b, '\n'), 0o644)
}

// Status is what a pid file says about its process.
type Status struct {
	PID   int  // from the pid file; 0 when there is none or it is unreadable
	Alive bool // the process lives and is the one Start started
	// Reused describes the live process that holds PID when it is not the
	// one Start started ("" otherwise).
	Reused string
}

// Lookup reads pidFile and checks that its process is alive and is the one
// Start started: same start time as recorded, or, for a pid file without a
// record, one of our programs.
func Lookup(pidFile string) Status {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return Status{}
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return Status{}
	}
	st := Status{PID: pid}
	if !alive(pid) {
		return st
	}
	if why := notOurs(pidFile, pid); why != "" {
		st.Reused = why
		return st
	}
	st.Alive = true
	return st
}

// notOurs says why the live process pid is not the daemon of pidFile, or "".
func notOurs(pidFile string, pid int) string {
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	exe = strings.TrimSuffix(exe, " (deleted)") // rebuilt while it ran
	what := describe(pid, exe)
	raw, err := os.ReadFile(identityFile(pidFile))
	if err != nil {
		// No record (an older calicoctl wrote the pid file): believe it only
		// for one of our programs that was already running when the pid
		// file was written; a reused pid belongs to a later process.
		if slices.Contains(ourPrograms, filepath.Base(exe)) && startedBy(pid, pidFile) {
			return ""
		}
		return what
	}
	var id identity
	if err := json.Unmarshal(raw, &id); err != nil || id.PID != pid {
		// The pid file was rewritten by something other than Start.
		return what + " (the pid file does not match its record " + identityFile(pidFile) + ")"
	}
	start, err := startTime(pid)
	if err != nil || start != id.Start {
		return what
	}
	if id.Exe != "" && exe != "" && strings.TrimSuffix(id.Exe, " (deleted)") != exe {
		return what
	}
	return ""
}

// describe names a process for messages: its program and command line.
func describe(pid int, exe string) string {
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	line := strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
	if len(line) > 80 {
		line = line[:80] + "..."
	}
	if exe == "" {
		exe = "an unknown program"
	}
	if line == "" {
		return exe
	}
	return fmt.Sprintf("%s (%s)", exe, line)
}

// startTime is field 22 of /proc/PID/stat: when the process started, in
// clock ticks since boot.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: count
	// fields after its closing parenthesis, which is field 3 (the state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// ReusedError is a pid file whose pid now belongs to another process.
type ReusedError struct {
	PIDFile string
	PID     int
	Other   string
}

func (e *ReusedError) Error() string {
	return fmt.Sprintf("pid %d from %s now belongs to another process, %s, which was left alone; the daemon it named is gone (stale pid file removed)", e.PID, e.PIDFile, e.Other)
}

// startedBy says whether process pid started no later than pidFile was last
// written (within the second that /proc/stat's boot time resolves).
func startedBy(pid int, pidFile string) bool {
	fi, err := os.Stat(pidFile)
	if err != nil {
		return false
	}
	ticks, err := startTime(pid)
	if err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return false
	}
	var boot int64
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if boot == 0 {
		return false
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	started := time.Unix(boot, 0).Add(time.Duration(ticks) * 10 * time.Millisecond)
	return !started.After(fi.ModTime().Add(time.Second))
}
