package agent

import (
	"testing"
	"time"
)

func TestRetryBackoff(t *testing.T) {
	b := retryBackoff{min: retryMin, max: retryMax}
	var got []time.Duration
	for range 9 {
		got = append(got, b.failed())
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	// A persistent failure costs a pass every 30 s, not two a second:
	// over ten minutes, fewer than 30 attempts.
	b.reset()
	n, elapsed := 0, time.Duration(0)
	for elapsed < 10*time.Minute {
		elapsed += b.failed()
		n++
	}
	if n > 30 {
		t.Errorf("%d retries in 10 minutes", n)
	}
	b.reset()
	if d := b.failed(); d != retryMin {
		t.Errorf("after reset the first delay is %s, want %s", d, retryMin)
	}
}

// The agent's timer: one pending retry at a time, re-armed by each failed
// pass, cleared by a clean one; a datastore change starts the series again.
func TestScheduleRetry(t *testing.T) {
	a := &Agent{trigger: make(chan struct{}, 1), backoff: retryBackoff{min: 20 * time.Millisecond, max: 80 * time.Millisecond}}
	kicked := func(within time.Duration) bool {
		select {
		case <-a.trigger:
			return true
		case <-time.After(within):
			return false
		}
	}
	a.scheduleRetry(true, false) // 20 ms
	if !kicked(2 * time.Second) {
		t.Fatal("no retry after a failed pass")
	}
	a.scheduleRetry(true, false) // 40 ms
	a.scheduleRetry(true, false) // 80 ms
	a.scheduleRetry(true, false) // 80 ms
	if a.backoff.next != 80*time.Millisecond {
		t.Errorf("delay after four failures = %s, want the 80ms cap", a.backoff.next)
	}
	if !kicked(2 * time.Second) {
		t.Fatal("no retry after repeated failures")
	}
	// Re-arming replaced the earlier timers instead of adding to them:
	// one kick, not three.
	if kicked(300 * time.Millisecond) {
		t.Error("a second retry fired: failed passes stacked timers")
	}
	a.scheduleRetry(true, true)
	if a.backoff.next != 20*time.Millisecond {
		t.Errorf("after a datastore change the delay is %s, want 20ms", a.backoff.next)
	}
	a.scheduleRetry(false, false)
	if a.backoff.next != 0 || kicked(200*time.Millisecond) {
		t.Error("a clean pass left a retry pending")
	}
}
