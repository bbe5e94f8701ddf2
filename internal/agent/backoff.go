package agent

import "time"

// Retry delays of a pass that failed: the first soon, then doubling.
const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

// retryBackoff spaces the retries of a failure that persists: min after the
// first failure, twice the previous delay after each further one, at most
// max, until reset (a clean pass).
type retryBackoff struct {
	min, max time.Duration
	next     time.Duration // the delay last handed out; 0 after reset
}

// failed records one more failure and returns how long to wait before the
// next attempt.
func (b *retryBackoff) failed() time.Duration {
	if b.next == 0 {
		b.next = b.min
	} else {
		b.next = min(2*b.next, b.max)
	}
	return b.next
}

func (b *retryBackoff) reset() { b.next = 0 }
