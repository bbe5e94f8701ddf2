package cniagent

import (
	"encoding/json"
	"os"
	"syscall"
	"time"
)

// initDone is when this package was initialised: after the Go runtime and
// every package the plugin imports, just before main. A runtime's exec
// until here is the plugin's start-up cost.
var initDone = time.Now()

// TraceEnv names a file to which the plugin appends one JSON line per
// call (TraceLine): where its time went, for measuring it as a runtime
// runs it. Unset, nothing is traced.
const TraceEnv = "CALICO_CNI_TRACE"

// TraceLine is one call's phases.
type TraceLine struct {
	Command string `json:"command"`
	// Via is "agent" (the agent did the work) or "plugin" (the full
	// plugin did).
	Via string `json:"via"`
	// InitDone is initDone in Unix nanoseconds: the caller subtracts the
	// time it started the process.
	InitDone int64        `json:"initDoneUnixNano"`
	Phases   []TracePhase `json:"phases"`
	// CPUMs is the writing process's CPU time (user and system) so far:
	// its start-up included, the agent's work not.
	CPUMs float64 `json:"cpuMs"`
}

// TracePhase is one phase: its time and datastore round trips.
type TracePhase struct {
	Phase string  `json:"phase"`
	Ms    float64 `json:"ms"`
	Calls int64   `json:"calls"`
}

// Tracing says whether calls are traced (TraceEnv set).
func Tracing() bool { return os.Getenv(TraceEnv) != "" }

// WriteTrace appends this call's line to TraceEnv's file, if set.
func WriteTrace(command, via string, phases []TracePhase) {
	path := os.Getenv(TraceEnv)
	if path == "" {
		return
	}
	line := TraceLine{Command: command, Via: via, InitDone: initDone.UnixNano(), Phases: phases}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		line.CPUMs = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e6
	}
	b, _ := json.Marshal(line)
	if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Write(append(b, '\n'))
		f.Close()
	}
}
