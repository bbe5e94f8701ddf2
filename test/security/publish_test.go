package security

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestPublishedPortsBounded: an endpoint record is a wish, not an order. A
// stray writer gives worker-1's record published ports: host port 22 (the
// host's SSH, below the --publish-ports range 1024-65535) and 30080 (inside
// it). Port 22 must stay the host's own service, answered by the host from
// another host, while 30080 reaches worker-1 as a published port should;
// `calicoctl status` names the refused mapping.
//
// Told apart by what listens: the host listens on 22, worker-1 on 8080 only.
// The hostile mapping sends 22 to worker-1's port 9999, where nothing
// listens, so a redirected connection would be refused.
func TestPublishedPortsBounded(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1 := w.Workloads["worker-1"]
	e2etest.ListenTCP(t, h1.Netns, "0.0.0.0:22")
	e2etest.ListenTCP(t, w1.Netns, "0.0.0.0:8080")
	ssh := e2etest.AP(h1.Addr(), 22)
	if err := e2etest.DialTCP(ctx, h2.Netns, h2.Addr(), ssh, 2*time.Second); err != nil {
		t.Fatalf("before the attack host2 cannot reach host1's port 22: %v", err)
	}

	cli := e2etest.EtcdFrom(t, h1, w.Etcd)
	editEndpoint(t, ctx, cli, h1.Label, w1.Name, func(ep *api.Endpoint) {
		ep.Ports = []api.PortMapping{
			{Proto: "tcp", HostPort: 22, Port: 9999},
			{Proto: "tcp", HostPort: 30080, Port: 8080},
		}
	})
	// Honest half first: once 30080 reaches worker-1, host1's agent has
	// applied the record, so port 22's answer below is the agent's choice.
	pub := e2etest.AP(h1.Addr(), 30080)
	e2etest.WaitFor(t, 30*time.Second, "host2 reaches worker-1 through host1:30080", func() (bool, string) {
		err := e2etest.DialTCP(ctx, h2.Netns, h2.Addr(), pub, time.Second)
		return err == nil, fmt.Sprint(err)
	})
	redirected := 0
	for range 5 {
		if err := e2etest.DialTCP(ctx, h2.Netns, h2.Addr(), ssh, 2*time.Second); err != nil {
			redirected++
			t.Errorf("host2 -> host1:22 with the hostile record: %v (redirected to worker-1?)", err)
		}
	}
	rules, _ := h1.Run(ctx, "nft", "list", "table", "inet", "calico")
	if strings.Contains(rules, "dport 22 ") {
		t.Errorf("host1's ruleset mentions port 22:\n%s", rules)
	}
	var status string
	e2etest.WaitFor(t, 20*time.Second, "host1's status names the refused mapping", func() (bool, string) {
		status, _ = w.Ctl(ctx, h1, "status")
		return strings.Contains(status, "published port tcp/22"), status
	})
	t.Logf("FIGURE: hostile publish of host port 22: %d of 5 connections to host1:22 redirected (must be 0); honest publish 30080 -> worker-1:8080 reached", redirected)
}
