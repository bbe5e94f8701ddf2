package cni

import (
	"log/slog"
	"sync"
	"time"
)

// refusedLog reports callers the CNI socket refuses without letting them
// write the agent's log: any process in the host's network namespace can
// connect to the abstract socket, and a loop of connects would otherwise
// add a line each. One line per interval, carrying how many were refused
// since the last one.
type refusedLog struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
	now        func() time.Time // tests
}

const refusedLogEvery = 10 * time.Second

// note logs err now, or counts it for the next line when one was logged
// less than an interval ago. It says whether it logged.
func (r *refusedLog) note(l *slog.Logger, err error) bool {
	r.mu.Lock()
	now := time.Now()
	if r.now != nil {
		now = r.now()
	}
	every := r.every
	if every == 0 {
		every = refusedLogEvery
	}
	if !r.last.IsZero() && now.Sub(r.last) < every {
		r.suppressed++
		r.mu.Unlock()
		return false
	}
	more := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if more > 0 {
		l.Warn("CNI socket: caller refused", "err", err, "also refused since the last line", more)
	} else {
		l.Warn("CNI socket: caller refused", "err", err)
	}
	return true
}
