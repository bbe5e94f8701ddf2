package datastore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// QuickTimeout bounds each call once a call to the same datastore has gone
// unanswered and none has been answered since. A command that meets a dead
// datastore then fails after one OpTimeout and, if it must still try to undo
// what it did, a few short tries, instead of OpTimeout per step: `container
// add` with etcd frozen half way reports within 10 s, not after a minute.
const QuickTimeout = 1500 * time.Millisecond

// ErrUnreachable is wrapped by every error of a call the datastore did not
// answer in time, so callers can tell "etcd is gone" from "etcd said no".
var ErrUnreachable = errors.New("datastore unreachable")

// Calls gives every call to one datastore its deadline: OpTimeout, or the
// caller's own deadline when that comes sooner, or QuickTimeout while the
// datastore is known not to answer. Every call of a Client goes through its
// one Calls, IPAM's transactions included (IPAM's Store is the Client), so
// what one caller learnt about the datastore the others do not wait to
// learn again.
type Calls struct {
	where string
	// silent is set when a call ran out of time, and cleared by the next
	// call the datastore answers (with success or a refusal alike).
	silent atomic.Bool
	// n counts the calls made (round trips, as a trace reports them).
	n atomic.Int64
}

// newCalls makes the deadline keeper for the datastore at where (its
// endpoints, for messages).
func newCalls(where string) *Calls { return &Calls{where: where} }

// Do runs fn with a bounded context. A call that runs out of time returns an
// UnreachableError (one line, saying what to check); a call the caller
// cancelled returns the caller's error.
func (k *Calls) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if k == nil {
		// A Client made as a literal has no keeper: every call still
		// gets OpTimeout, nothing is remembered.
		k = &Calls{}
	}
	k.n.Add(1)
	limit := OpTimeout
	if k.silent.Load() {
		limit = QuickTimeout
	}
	octx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	start := time.Now()
	err := fn(octx)
	if err == nil {
		k.silent.Store(false)
		return nil
	}
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	if octx.Err() == context.DeadlineExceeded || isDeadline(err) {
		k.silent.Store(true)
		return &UnreachableError{Where: k.where, After: time.Since(start)}
	}
	// The datastore answered, if only to refuse: it is alive.
	k.silent.Store(false)
	return err
}

// isDeadline recognises a deadline that reached us as text (gRPC status
// errors do not always wrap the context's error).
func isDeadline(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "context deadline exceeded") ||
		strings.Contains(err.Error(), "DeadlineExceeded")
}

// UnreachableError is a datastore call that got no answer in time.
type UnreachableError struct {
	Where string
	After time.Duration
}

func (e *UnreachableError) Error() string {
	return unreachableText(e.Where, "no answer within "+roundSeconds(e.After)+" (is etcd running?)")
}

// Is makes errors.Is(err, ErrUnreachable) and errors.Is(err,
// context.DeadlineExceeded) both true.
func (e *UnreachableError) Is(target error) bool {
	return target == ErrUnreachable || target == context.DeadlineExceeded
}

func unreachableText(where, reason string) string {
	return fmt.Sprintf("cannot reach the datastore at %s: %s; start one with `calicoctl datastore start` or point ETCD_ENDPOINTS/ETCD_AUTHORITY at your etcd", where, reason)
}

// roundSeconds shows a waiting time the way a person reads it: 5s, 1.5s.
func roundSeconds(d time.Duration) string {
	if d >= 2*time.Second {
		return d.Round(time.Second).String()
	}
	return d.Round(100 * time.Millisecond).String()
}
