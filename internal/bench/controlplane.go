package bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// MeshResult is one size of the BGP full mesh.
type MeshResult struct {
	Hosts int `json:"hosts"`
	// MeshSeconds is how long after the last host's `calicoctl node`
	// returned every host reported all its sessions Established.
	MeshSeconds float64 `json:"meshSeconds"`
	// PropagationMs, per trial: from the in-process call that adds a
	// workload in a new address block on host 1 until the last other host
	// has a route for the block.
	PropagationMs []float64 `json:"propagationMs"`
	P50Ms         float64   `json:"p50Ms"`
	MaxMs         float64   `json:"maxMs"`
	// OwnHostP50Ms: the same clock until host 1 itself had a route for the
	// block (its blackhole or the workload's /32): the local part, from the
	// call through the datastore watch to the agent's route sync. The rest
	// is the announcement and the far agents.
	OwnHostP50Ms float64 `json:"ownHostP50Ms"`
	// Idle agents: CPU (percent of one CPU) and resident memory.
	IdleCPUPercent    float64 `json:"idleCpuPercent"`
	IdleCPUMaxPercent float64 `json:"idleCpuMaxPercent"`
	RSSMB             float64 `json:"rssMB"` // mean
}

const cpPool = "10.80.0.0/16"

// runControlPlane grows one world through the mesh sizes: at each, it times
// how long a new block's route takes to reach every host, and samples the
// idle agents' CPU.
func runControlPlane(ctx context.Context, r *runner) error {
	w, err := r.buildWorld(ctx, walkthrough.Options{})
	if err != nil {
		return err
	}
	defer w.close()
	h1 := w.Hosts[0]
	if _, err := w.Ctl(ctx, h1, "pool", "add", cpPool); err != nil {
		return err
	}
	trial := 0
	for _, n := range r.plan.MeshSizes {
		if n > 250 {
			return fmt.Errorf("mesh size %d does not fit the lab's /24 fabric", n)
		}
		for len(w.Hosts) < n {
			k := len(w.Hosts) + 1
			r.prog.count(fmt.Sprintf("starting hosts for a mesh of %d", n), k, n)
			if _, err := w.AddHost(ctx, fmt.Sprintf("host%d", k), fmt.Sprintf("10.0.0.%d/24", k)); err != nil {
				return err
			}
		}
		m := MeshResult{Hosts: len(w.Hosts)}
		t0 := time.Now()
		if err := w.waitMesh(ctx, 3*time.Minute); err != nil {
			return err
		}
		m.MeshSeconds = round(time.Since(t0).Seconds(), 2)
		r.prog.logf("mesh of %d: all sessions established %.1f s after the last node started", n, m.MeshSeconds)

		nss := make([]*lab.Netns, len(w.Hosts))
		names := make([]string, len(w.Hosts))
		for i, h := range w.Hosts {
			nss[i], names[i] = h.Netns, h.Name
		}
		rw, err := watchRoutes(nss...)
		if err != nil {
			return err
		}
		var own []float64
		for range r.plan.MeshTrials {
			trial++
			if trial > 250 {
				rw.close()
				return fmt.Errorf("too many control-plane trials for pool %s", cpPool)
			}
			// A fresh /26 each time: a workload in an existing block needs
			// no new route anywhere but on its own host.
			ip := netip.AddrFrom4([4]byte{10, 80, byte(trial), 1})
			name := fmt.Sprintf("cp-%d", trial)
			ns, err := w.Lab.AddWorkloadNetns(h1, name)
			if err != nil {
				rw.close()
				return err
			}
			start := time.Now()
			if _, err := w.attach(ctx, h1, ns, name, ip.String()); err != nil {
				rw.close()
				return err
			}
			got, err := rw.wait(ctx, names, ip, false, start, 30*time.Second)
			if err != nil {
				rw.close()
				return fmt.Errorf("mesh of %d: %w", n, err)
			}
			var last time.Time
			for ns, t := range got {
				if ns != h1.Name && t.After(last) {
					last = t
				}
			}
			m.PropagationMs = append(m.PropagationMs, round(ms(last.Sub(start)), 2))
			own = append(own, ms(got[h1.Name].Sub(start)))
			rw.forget()
		}
		rw.close()
		m.P50Ms = round(median(m.PropagationMs), 2)
		m.OwnHostP50Ms = round(median(own), 2)
		_, m.MaxMs = minMax(m.PropagationMs)
		r.prog.logf("mesh of %d: new block's route on every host after %.1f ms (median), %.1f ms (max)", n, m.P50Ms, m.MaxMs)

		if err := w.idleCPU(ctx, r, &m); err != nil {
			return err
		}
		r.res.ControlPlane = append(r.res.ControlPlane, m)
		target, op := 1000.0, ""
		if n == 20 || n == r.plan.MeshSizes[len(r.plan.MeshSizes)-1] {
			op = "<=" // the target is for the largest mesh, 20 hosts
		}
		r.res.metric(SecControlPlane, fmt.Sprintf("new route on all %d hosts (p50)", n), m.P50Ms, "ms", op, target,
			fmt.Sprintf("max %.1f ms over %d trials; host 1's own route after %.1f ms; mesh up %.1f s after the last node", m.MaxMs, len(m.PropagationMs), m.OwnHostP50Ms, m.MeshSeconds))
		r.res.metric(SecControlPlane, fmt.Sprintf("idle agent CPU, %d hosts", n), m.IdleCPUPercent, "% of a CPU", "", 0,
			fmt.Sprintf("max %.2f%%; RSS %.1f MB (mean)", m.IdleCPUMaxPercent, m.RSSMB))
	}
	return nil
}

// waitMesh waits until every host reports a session to every other host,
// all Established.
func (w *world) waitMesh(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := len(w.Hosts) - 1
	for {
		ok := 0
		var lagging string
		for _, h := range w.Hosts {
			st, err := w.cli.Status(ctx, h.Label)
			est := 0
			if err == nil {
				for _, p := range st.BGPPeers {
					if p.State == "Established" {
						est++
					}
				}
			}
			if est == want {
				ok++
			} else if lagging == "" {
				lagging = fmt.Sprintf("%s has %d of %d sessions up", h.Label, est, want)
			}
		}
		if ok == len(w.Hosts) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("BGP mesh of %d hosts not established within %s: %s", len(w.Hosts), timeout, lagging)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// idleCPU samples every agent's CPU time over IdleSeconds after a short pause.
func (w *world) idleCPU(ctx context.Context, r *runner, m *MeshResult) error {
	pids := make([]int, len(w.Hosts))
	for i, h := range w.Hosts {
		pid, err := w.agentPID(h)
		if err != nil {
			return err
		}
		pids[i] = pid
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	before := make([]time.Duration, len(pids))
	for i, pid := range pids {
		c, err := cpuTime(pid)
		if err != nil {
			return err
		}
		before[i] = c
	}
	t0 := time.Now()
	r.prog.logf("mesh of %d: sampling idle agents for %d s", len(w.Hosts), r.plan.IdleSeconds)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(r.plan.IdleSeconds) * time.Second):
	}
	elapsed := time.Since(t0)
	var sum, mx, rss float64
	for i, pid := range pids {
		c, err := cpuTime(pid)
		if err != nil {
			return err
		}
		pct := 100 * float64(c-before[i]) / float64(elapsed)
		sum += pct
		mx = max(mx, pct)
		mb, _ := rssMB(pid)
		rss += mb
	}
	m.IdleCPUPercent = round(sum/float64(len(pids)), 2)
	m.IdleCPUMaxPercent = round(mx, 2)
	m.RSSMB = round(rss/float64(len(pids)), 1)
	return nil
}
