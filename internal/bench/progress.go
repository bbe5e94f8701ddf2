package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress is the display on stderr while the bench runs: one line per
// step with the elapsed time, and a counter for long loops that rewrites
// itself on a terminal (and prints every tenth of the way otherwise, so logs
// stay short).
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu       sync.Mutex
	inline   bool // a counter line is open (terminal only)
	lastTick map[string]int
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), lastTick: map[string]int{}}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) stamp() string {
	d := time.Since(p.start).Round(time.Second)
	return fmt.Sprintf("[%02d:%02d]", int(d.Minutes()), int(d.Seconds())%60)
}

// endInline terminates an open counter line. Callers hold mu.
func (p *progress) endInline() {
	if p.inline {
		fmt.Fprintln(p.w)
		p.inline = false
	}
}

func (p *progress) section(i, n int, name string) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endInline()
	fmt.Fprintf(p.w, "%s ==> section %d/%d: %s\n", p.stamp(), i, n, name)
}

func (p *progress) logf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endInline()
	fmt.Fprintf(p.w, "%s     %s\n", p.stamp(), fmt.Sprintf(format, args...))
}

// count shows "what i/n". Safe to call from several goroutines.
func (p *progress) count(what string, i, n int) {
	if p == nil || p.w == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(p.w, "\r%s     %s %d/%d ", p.stamp(), what, i, n)
		p.inline = i < n
		if i >= n {
			fmt.Fprintln(p.w)
		}
		return
	}
	tenth := i * 10 / n
	if tenth > p.lastTick[what] || i == n {
		p.lastTick[what] = tenth
		fmt.Fprintf(p.w, "%s     %s %d/%d\n", p.stamp(), what, i, n)
	}
	if i >= n {
		delete(p.lastTick, what)
	}
}

// steps is an io.Writer for walkthrough.Build's "==> step" lines: they are
// shown indented under the current section.
func (p *progress) steps() io.Writer {
	if p == nil || p.w == nil {
		return nil
	}
	return stepWriter{p}
}

type stepWriter struct{ p *progress }

func (s stepWriter) Write(b []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		s.p.logf("  %s", strings.TrimPrefix(line, "==> "))
	}
	return len(b), nil
}
