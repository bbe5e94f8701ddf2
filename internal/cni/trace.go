package cni

import (
	"context"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/cniagent"
)

// startTrace returns ctx with a trace of this call when the plugin traces
// (cniagent.TraceEnv), and the function that writes it once the call ends.
func startTrace(ctx context.Context, command string) (context.Context, func()) {
	if !cniagent.Tracing() {
		return ctx, func() {}
	}
	t := &client.Trace{}
	ctx = client.WithTrace(ctx, t)
	return ctx, func() {
		var phases []cniagent.TracePhase
		for _, m := range t.Marks() {
			phases = append(phases, cniagent.TracePhase{Phase: m.Phase, Ms: float64(m.Took.Microseconds()) / 1000, Calls: m.Calls})
		}
		cniagent.WriteTrace(command, "plugin", phases)
	}
}
