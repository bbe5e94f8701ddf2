package main

import (
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// startCPUProfile writes a pprof CPU profile of this process to the file
// CALICO_CPUPROFILE names (%p in it: the process id), for the first CALICO_CPUPROFILE_SECONDS seconds
// (default 30) or until the returned stop runs, whichever is first. It is
// how the agent's cold start and passes are profiled (`go tool pprof
// bin/calico-node FILE`): the metrics port serves no pprof, so nothing
// reachable over the network can make the agent spend CPU on profiling.
func startCPUProfile(log *slog.Logger) (stop func()) {
	path := os.Getenv("CALICO_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	// %p: this process's id, so the agents of several lab hosts, or one
	// agent and its restart, write separate files.
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	secs := 30
	if s, err := strconv.Atoi(os.Getenv("CALICO_CPUPROFILE_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	f, err := os.Create(path)
	if err != nil {
		log.Warn("CALICO_CPUPROFILE: not profiling", "err", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		log.Warn("CALICO_CPUPROFILE: not profiling", "err", err)
		return func() {}
	}
	log.Info("writing a CPU profile", "file", path, "seconds", secs)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-done:
		}
		pprof.StopCPUProfile()
		f.Close()
		log.Info("CPU profile written", "file", path)
	}()
	return func() {
		select {
		case <-stopped:
		default:
			close(done)
			<-stopped
		}
	}
}
