package client

import (
	"context"
	"sync"
	"time"
)

// Trace records when each phase of an AddWorkload call ended, so the
// setup benchmark can say where a call's time goes (datastore reads,
// IPAM, the veth, the record) without a profiler. A call without a Trace
// in its context pays one context lookup per phase.
type Trace struct {
	mu    sync.Mutex
	start time.Time
	marks []Mark
}

// Mark is one phase and how long it took.
type Mark struct {
	Phase string
	Took  time.Duration
}

type traceKey struct{}

// WithTrace makes calls under ctx record their phases in t, timed from now.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	t.mu.Lock()
	t.start = time.Now()
	t.mu.Unlock()
	return context.WithValue(ctx, traceKey{}, t)
}

// Marks are the phases recorded so far, in order.
func (t *Trace) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Mark(nil), t.marks...)
}

// mark ends phase: it took the time since the previous mark (or the start).
func mark(ctx context.Context, phase string) {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	if t == nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	t.marks = append(t.marks, Mark{Phase: phase, Took: now.Sub(t.start)})
	t.start = now
	t.mu.Unlock()
}

// The phases of AddWorkload, in order.
const (
	PhaseChecks = "checks" // validation; the node and profiles read
	PhaseLock   = "lock"   // the per-workload lock
	PhaseRead   = "read"   // the existing record and the handle read
	PhaseIPAM   = "ipam"   // addresses taken
	PhaseVeth   = "veth"   // the pools' MTU read, the veth pair, sysctls, addresses, routes
	PhaseRecord = "record" // the endpoint record written
)
