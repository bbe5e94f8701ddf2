package security

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// The agent owns the host side of its workloads' veths: a host side broken
// by hand (down, a smaller MTU, proxy ARP and forwarding off), which cuts
// the workload off, is put back by the agent's next pass and traffic flows
// again; a workload whose veth was deleted by hand is named in `calicoctl
// status` (the agent does not make veths: the workload's side lives in a
// namespace only `container add` knows).
func TestAgentRestoresWorkloadInterfaces(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1 := w.Hosts[0]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	routed(t, ctx, w.Hosts[1], w1.IP, h1)
	mustOpen(t, ctx, "worker-3 -> worker-1 (PROF_1) before", w3, w1)

	veth := api.WorkloadIfaceName(h1.Label, "worker-1")
	sysctl := func(key string) string { return "net/ipv4/" + strings.Replace(key, "%s", veth, 1) }
	show := func() string {
		out, err := h1.Run(ctx, "sh", "-c", fmt.Sprintf("ip -o link show dev %s; cat /proc/sys/%s /proc/sys/%s /proc/sys/%s",
			veth, sysctl("conf/%s/proxy_arp"), sysctl("conf/%s/forwarding"), sysctl("neigh/%s/proxy_delay")))
		if err != nil {
			t.Fatalf("reading %s: %v: %s", veth, err, out)
		}
		return out
	}
	// What matters of it: the MTU, the flags (UP) and the three settings.
	essence := func(s string) string {
		f := strings.Fields(s)
		var keep []string
		for i, x := range f {
			if x == "mtu" && i+1 < len(f) || strings.HasPrefix(x, "<") {
				keep = append(keep, x)
				if x == "mtu" {
					keep = append(keep, f[i+1])
				}
			}
		}
		return strings.Join(append(keep, f[len(f)-3:]...), " ")
	}
	healthy := essence(show())
	if !strings.Contains(healthy, ",UP") || !strings.HasSuffix(healthy, "1 1 0") {
		t.Fatalf("host side of worker-1 as made: %s", healthy)
	}
	run := func(ns *lab.Netns, args ...string) {
		if out, err := ns.Run(ctx, args...); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	// By hand on host 1: everything the host side is made with, undone.
	breakIt := func() string {
		run(h1.Netns, "ip", "link", "set", veth, "mtu", "1300")
		run(h1.Netns, "ip", "link", "set", veth, "down")
		for _, k := range []string{"conf/%s/proxy_arp", "conf/%s/forwarding"} {
			run(h1.Netns, "sh", "-c", "echo 0 > /proc/sys/"+sysctl(k))
		}
		run(h1.Netns, "sh", "-c", "echo 80 > /proc/sys/"+sysctl("neigh/%s/proxy_delay"))
		run(w1.Netns, "ip", "neigh", "flush", "all")
		return essence(show())
	}
	restoredBy := func(what string) time.Duration {
		took := e2etest.WaitFor(t, 60*time.Second, what+" restores "+veth, func() (bool, string) {
			s := essence(show())
			return s == healthy, s + " (want " + healthy + ")"
		})
		mustOpen(t, ctx, "worker-3 -> worker-1 after "+what, w3, w1)
		return took
	}
	// With the agent stopped (so no pass can run in between), the break
	// cuts worker-1 off; the restarted agent's first pass puts it back.
	ctl(t, ctx, w, h1, "node", "stop", "--name="+h1.Label)
	broken := breakIt()
	before := e2etest.DialTCP(ctx, w3.Netns, w3.IP, e2etest.AP(w1.IP, 8080), 2*time.Second)
	if before == nil {
		t.Fatal("worker-3 reaches worker-1 with its host side down: the test proves nothing")
	}
	ctl(t, ctx, w, h1, "node", "--ip="+h1.Addr().String(), "--name="+h1.Label)
	tookRestart := restoredBy("the restarted agent")
	// With the agent running: any datastore change makes a pass (so does
	// the 30 s resync).
	breakIt()
	ctl(t, ctx, w, h1, "profile", "add", "TRIGGER")
	tookRunning := restoredBy("the running agent's next pass")
	restored := agentLogCount(t, w, h1, "restored workload interface settings")

	// A veth deleted by hand: the record stays, status names it.
	veth2 := api.WorkloadIfaceName(h1.Label, "worker-2")
	run(h1.Netns, "ip", "link", "del", veth2)
	ctl(t, ctx, w, h1, "profile", "add", "TRIGGER2")
	var status string
	e2etest.WaitFor(t, 60*time.Second, "status names worker-2 as without its interface", func() (bool, string) {
		status = ctl(t, ctx, w, h1, "status")
		return strings.Contains(status, "worker-2 ("+veth2+")") && strings.Contains(status, "no interface"), status
	})
	t.Logf("FIGURE: host side of worker-1 broken by hand (%s, was %s) cut worker-3 off (%v); restored by the restarted agent in %v and by the running agent's next pass in %v (%d log line(s)), traffic flows after each; a deleted veth is named in status",
		broken, healthy, before, tookRestart.Round(100*time.Millisecond), tookRunning.Round(100*time.Millisecond), restored)
}
