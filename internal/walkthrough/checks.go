package walkthrough

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/calico-go/calico/internal/lab"
)

// Check is one reachability expectation and its outcome.
type Check struct {
	What   string
	From   string
	To     string
	Expect bool
	Got    bool
	Detail string
}

// OK says whether the outcome met the expectation.
func (c Check) OK() bool { return c.Expect == c.Got }

// Probe pings to from the workload and reports whether replies came back.
// Expected-open paths get a few seconds to converge; closed ones a short wait.
func Probe(ctx context.Context, from *lab.Netns, to netip.Addr, expect bool) (bool, string) {
	deadline := time.Now().Add(2 * time.Second)
	if expect {
		deadline = time.Now().Add(10 * time.Second)
	}
	var last lab.PingResult
	for {
		r, err := lab.Ping(ctx, from, to, 2, time.Second)
		last = r
		if err == nil && r.Received > 0 {
			return true, fmt.Sprintf("%d/%d replies", r.Received, r.Sent)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false, fmt.Sprintf("%d/%d replies", last.Received, last.Sent)
		}
	}
}

func (w *World) check(ctx context.Context, what, from string, to netip.Addr, toName string, expect bool) Check {
	wl := w.Workloads[from]
	got, detail := Probe(ctx, wl.Netns, to, expect)
	c := Check{What: what, From: from, To: fmt.Sprintf("%s (%s)", toName, to), Expect: expect, Got: got, Detail: detail}
	mark := "ok"
	if !c.OK() {
		mark = "UNEXPECTED"
	}
	w.step("check: %s: %s -> %s: reached=%v [%s]", what, from, c.To, got, mark)
	return c
}

// SeedChecks runs the walkthrough's checks in its order, including the step
// that appends PROF_1 to worker-2 and the checks that follow it.
func (w *World) SeedChecks(ctx context.Context) ([]Check, error) {
	ip := func(n string) netip.Addr { return w.Workloads[n].IP }
	out := w.Outside.IP
	checks := []Check{
		w.check(ctx, "nat-outgoing reaches the outside", "worker-1", out, "outside", true),
		w.check(ctx, "nat-outgoing reaches the outside", "worker-2", out, "outside", true),
		w.check(ctx, "same profile, across hosts", "worker-1", ip("worker-3"), "worker-3", true),
		w.check(ctx, "same profile, across hosts", "worker-3", ip("worker-1"), "worker-1", true),
		w.check(ctx, "other profile, same host", "worker-1", ip("worker-2"), "worker-2", false),
		w.check(ctx, "other profile, across hosts", "worker-3", ip("worker-2"), "worker-2", false),
	}
	w.step("host1: calicoctl container worker-2 profile append PROF_1")
	if _, err := w.Ctl(ctx, w.Hosts[0], "container", "worker-2", "profile", "append", "PROF_1"); err != nil {
		return checks, err
	}
	checks = append(checks,
		w.check(ctx, "after worker-2 joins PROF_1", "worker-2", ip("worker-1"), "worker-1", true),
		w.check(ctx, "after worker-2 joins PROF_1", "worker-2", ip("worker-3"), "worker-3", true),
	)
	return checks, nil
}

// Throughput is one iperf3 measurement.
type Throughput struct {
	Path        string  `json:"path"`
	Gbps        float64 `json:"gbps"`
	Retransmits int     `json:"retransmits"`
	Ratio       float64 `json:"ratio"` // to host-to-host in the same run
}

// MeasureThroughput runs iperf3 host-to-host (the baseline), then workload to
// workload across hosts and on one host, side by side in one run.
func (w *World) MeasureThroughput(ctx context.Context, seconds int) ([]Throughput, error) {
	if err := lab.Require("iperf3"); err != nil {
		return nil, err
	}
	h1, h2 := w.Hosts[0], w.Hosts[1]
	paths := []struct {
		name           string
		server, client *lab.Netns
		ip             netip.Addr
	}{
		{"host-to-host (baseline)", h1.Netns, h2.Netns, h1.Addr()},
		{"worker-3 -> worker-1, across hosts", w.Workloads["worker-1"].Netns, w.Workloads["worker-3"].Netns, w.Workloads["worker-1"].IP},
		{"worker-2 -> worker-1, same host", w.Workloads["worker-1"].Netns, w.Workloads["worker-2"].Netns, w.Workloads["worker-1"].IP},
	}
	var res []Throughput
	for _, p := range paths {
		w.step("iperf3 %ds: %s", seconds, p.name)
		r, err := lab.Iperf3(ctx, p.server, p.client, p.ip, seconds, 1)
		if err != nil {
			return res, fmt.Errorf("iperf3 %s: %w", p.name, err)
		}
		t := Throughput{Path: p.name, Gbps: r.Gbps, Retransmits: r.Retransmits}
		if len(res) > 0 && res[0].Gbps > 0 {
			t.Ratio = r.Gbps / res[0].Gbps
		} else {
			t.Ratio = 1
		}
		res = append(res, t)
	}
	return res, nil
}
