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
	// Count, when set, counts round trips (datastore.Client.Calls): each
	// mark says how many its phase made.
	Count func() int64

	mu    sync.Mutex
	start time.Time
	count int64
	marks []Mark
}

// Mark is one phase, how long it took and its round trips (with Count).
type Mark struct {
	Phase string
	Took  time.Duration
	Calls int64
}

type traceKey struct{}

// WithTrace makes calls under ctx record their phases in t, timed from now.
func WithTrace(ctx context.Context, t *Trace) context.Context {
	t.mu.Lock()
	t.start = time.Now()
	if t.Count != nil {
		t.count = t.Count()
	}
	t.mu.Unlock()
	return context.WithValue(ctx, traceKey{}, t)
}

// TraceFrom is the Trace of ctx, or nil.
func TraceFrom(ctx context.Context) *Trace {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	return t
}

// CountWith makes later marks count round trips with count (set once the
// connection exists).
func (t *Trace) CountWith(count func() int64) {
	t.mu.Lock()
	t.Count, t.count = count, 0
	t.mu.Unlock()
}

// Marks are the phases recorded so far, in order.
func (t *Trace) Marks() []Mark {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Mark(nil), t.marks...)
}

// mark ends phase: it took the time since the previous mark (or the start).
func mark(ctx context.Context, phase string) { MarkPhase(ctx, phase) }

// MarkPhase ends phase in the Trace of ctx, if any (callers add phases of
// their own around AddWorkload's).
func MarkPhase(ctx context.Context, phase string) {
	t, _ := ctx.Value(traceKey{}).(*Trace)
	if t == nil {
		return
	}
	t.Mark(phase)
}

// Mark ends phase.
func (t *Trace) Mark(phase string) {
	now := time.Now()
	t.mu.Lock()
	m := Mark{Phase: phase, Took: now.Sub(t.start)}
	if t.Count != nil {
		c := t.Count()
		m.Calls, t.count = c-t.count, c
	}
	t.marks = append(t.marks, m)
	t.start = now
	t.mu.Unlock()
}

// The phases of AddWorkload, in order.
const (
	PhaseChecks = "checks" // validation; the node and profiles read
	PhaseLock   = "lock"   // the per-workload lock
	PhaseRead   = "read"   // the existing record and the handle read
	PhaseIPAM   = "ipam"   // addresses taken (the veth pair is made meanwhile)
	PhaseVeth   = "veth"   // the wait for the veth pair, then its addresses and routes
	PhaseRecord = "record" // the endpoint record written
)
