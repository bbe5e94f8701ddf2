package nft

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// cpuNow is this process's CPU time and that of its waited-for children
// (the nft runs).
func cpuNow(t *testing.T) time.Duration {
	t.Helper()
	var total time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			t.Fatal(err)
		}
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return total
}

// TestKernelResyncAtScale: at the scale (1000 endpoints, 200 label
// policies), a resync with nothing drifted runs no nft transaction, a
// label change right after it goes on incrementally, and a hand edit is
// repaired by the next one. It logs, side by side, the CPU (ours and
// nft's) of a resync as it was (the record forgotten, the table rewritten)
// and as it is: what a label change arriving meanwhile waits for.
func TestKernelResyncAtScale(t *testing.T) {
	requireKernel(t)
	if testing.Short() {
		t.Skip("short")
	}
	ns := runID(t) + "-r"
	addNetns(t, ns)
	h := newHostEnforcer(t, ns)
	p := ScalePolicy(1000, 100, 200)
	h.apply(p)

	var old, now []time.Duration
	for i := range 4 {
		// As it was: Resync forgot the record.
		c0 := cpuNow(t)
		h.e.mu.Lock()
		h.e.cur = nil
		h.e.mu.Unlock()
		if st := h.apply(p); !st.Full {
			t.Fatalf("forced rewrite %d: %+v", i, st)
		}
		old = append(old, cpuNow(t)-c0)

		writes := h.e.Writes()
		c0 = cpuNow(t)
		h.e.Resync()
		st := h.apply(p)
		now = append(now, cpuNow(t)-c0)
		if st.Ops != 0 || st.Full || h.e.Writes() != writes {
			t.Errorf("resync %d without drift: %+v, %d nft transactions", i, st, h.e.Writes()-writes)
		}
		// A label change after the resync: a few operations, not a rewrite.
		q := ScaleRelabel(p, 7+i, 11+i, 200)
		if st := h.apply(q); st.Full || st.Ops == 0 || st.Ops > 20 {
			t.Errorf("label change after resync %d: %+v", i, st)
		}
		h.apply(p)
	}
	t.Logf("CPU of one resync at 1000 endpoints / 200 policies (ours + nft's): rewrite as before %v; generation check %v", old, now)

	// A set element removed by hand: still missing after an Apply (our
	// record says it is there), back after the next resync.
	set, addr := ScaleSelectorSet4(0), ScaleAddr(0) // endpoint 0 is app a0
	has := func() bool {
		return exec.Command("ip", "netns", "exec", ns, "nft", "get", "element", "inet", TableName, set, "{", addr, "}").Run() == nil
	}
	if !has() {
		t.Fatalf("%s not in %s", addr, set)
	}
	h.nft("delete", "element", "inet", TableName, set, "{", addr, "}")
	if st := h.apply(p); st.Ops != 0 || has() {
		t.Fatalf("Apply before the resync: %+v", st)
	}
	h.e.Resync()
	if st := h.apply(p); !st.ResyncRewrite || !has() {
		t.Errorf("resync after the element was removed: %+v; element back: %v", st, has())
	}
}
