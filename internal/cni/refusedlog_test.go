package cni

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A caller that connects in a loop gets one log line per interval, and the
// next line says how many were refused in between.
func TestRefusedLogIsRateLimited(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	clock := time.Unix(1000, 0)
	r := &refusedLog{every: 10 * time.Second, now: func() time.Time { return clock }}
	err := errors.New("uid 1000 is not root")
	logged := 0
	for i := 0; i < 1000; i++ {
		if r.note(l, err) {
			logged++
		}
		clock = clock.Add(5 * time.Millisecond) // 1000 connects in 5 s
	}
	if logged != 1 {
		t.Errorf("1000 refusals in 5 s logged %d lines, want 1", logged)
	}
	clock = clock.Add(10 * time.Second)
	if !r.note(l, err) {
		t.Fatal("a refusal after the interval was not logged")
	}
	if out := buf.String(); strings.Count(out, "caller refused") != 2 || !strings.Contains(out, `"also refused since the last line"=999`) {
		t.Errorf("log:\n%s", out)
	}
}
