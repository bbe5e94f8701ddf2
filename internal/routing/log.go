package routing

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogAdapter feeds GoBGP's log calls into slog. GoBGP's default logger
// (logrus at info level) prints a line for every FSM step and every
// connection attempt; a node agent with dozens of peers would drown its own
// messages, so only warnings and errors pass by default.
type slogAdapter struct {
	l     *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel; messages above it are dropped
	// onPrefixLimit is told the neighbour whose session GoBGP resets for
	// going over its prefix limit: GoBGP says so only in this warning.
	onPrefixLimit func(neighbour string)
}

// prefixLimitMsg is GoBGP's warning for a peer over its prefix limit. With
// a "Pct" field it is only the early warning at a threshold, which we do
// not configure; without, the session is being reset.
const prefixLimitMsg = "prefix limit reached"

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	if l == nil {
		l = slog.Default()
	}
	a := &slogAdapter{l: l.With("component", "gobgp")}
	a.level.Store(uint32(gobgplog.WarnLevel))
	return a
}

func (a *slogAdapter) log(lvl gobgplog.LogLevel, slvl slog.Level, msg string, fields gobgplog.Fields) {
	// GoBGP checks GetLevel before building expensive debug fields, but
	// not everywhere: filter here too so dropped messages cost no
	// formatting.
	if lvl > a.GetLevel() {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	// Sorted so the same event always prints the same way.
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	a.l.Log(context.Background(), slvl, msg, args...)
}

// Panic is what GoBGP calls on "code logic bug"; it expects not to return,
// so neither do we.
func (a *slogAdapter) Panic(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

// Fatal is called by GoBGP only for unrecoverable states (a gRPC listener
// we never enable, an unknown internal message). logrus would os.Exit; a
// panic keeps the stack, which is what one needs to understand such a bug.
func (a *slogAdapter) Fatal(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.FatalLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s %v", msg, fields))
}

func (a *slogAdapter) Error(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}

func (a *slogAdapter) Warn(msg string, fields gobgplog.Fields) {
	if msg == prefixLimitMsg && a.onPrefixLimit != nil {
		if _, early := fields["Pct"]; !early {
			if k, ok := fields["Key"].(string); ok {
				a.onPrefixLimit(k)
				return // the callback logs it in our words
			}
		}
	}
	a.log(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}

func (a *slogAdapter) Info(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.InfoLevel, slog.LevelInfo, msg, fields)
}

func (a *slogAdapter) Debug(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.DebugLevel, slog.LevelDebug, msg, fields)
}

func (a *slogAdapter) SetLevel(level gobgplog.LogLevel) { a.level.Store(uint32(level)) }

func (a *slogAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(a.level.Load()) }
