package faults

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// testDatastoreOutage: etcd is down for 30 s. Forwarding goes on (a TCP
// stream and a ping across hosts lose nothing); writes fail within a few
// seconds with one clear line; a workload added through a retry during the
// outage appears on the other host once etcd is back. Host 2 is kept from
// etcd a little longer, while its history is compacted, so its agent must
// re-list (its watch cannot resume) to learn about that workload.
func testDatastoreOutage(t *testing.T, w *walkthrough.World) {
	const seconds, outage = 60, 30 * time.Second
	ctx := e2etest.Ctx(t, 4*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	dataDir := filepath.Join(w.StateDir, "etcd")
	// The workload added during the outage, on host 1, in a block nobody
	// has yet: host 2 has no route to it until it learns about it.
	ip5 := netip.MustParseAddr("192.168.100.200")
	ns5, err := w.Lab.AddWorkloadNetns(h1, "worker-5")
	if err != nil {
		t.Fatal(err)
	}
	routedViaHost1 := func() (bool, string) {
		out, _ := h2.Run(ctx, "ip", "route", "get", ip5.String())
		return strings.Contains(out, "via "+h1.Addr().String()), out
	}
	if ok, out := routedViaHost1(); ok {
		t.Fatalf("host2 already routes %s via host1 before it exists: %s", ip5, out)
	}

	stream := startStream(t, ctx, w1.Netns, w3.Netns, w1.IP, seconds)
	pings := pingRun(ctx, w1.Netns, w3.IP, seconds*time.Second)
	time.Sleep(3 * time.Second)

	ctl(t, ctx, w, h1, "datastore", "stop", "--data-dir", dataDir)
	stopped := time.Now()
	etcdUp := false
	startEtcd := func() error {
		_, err := w.Ctl(context.Background(), h1, "datastore", "start", "--listen", w.Etcd, "--data-dir", dataDir)
		return err
	}
	defer func() {
		if !etcdUp {
			startEtcd()
		}
	}()

	// Writes fail fast, with one line that says what is wrong.
	addArgs := []string{"container", "add", "worker-5", ip5.String(), "--netns", ns5.Path}
	for _, args := range [][]string{addArgs, {"profile", "add", "PROF_OUTAGE"}} {
		start := time.Now()
		out, err := w.Ctl(ctx, h1, args...)
		took := time.Since(start)
		msg := strings.TrimSpace(out)
		t.Logf("FIGURE: datastore outage: `calicoctl %s` failed after %.1f s: %s", strings.Join(args[:2], " "), took.Seconds(), msg)
		switch {
		case err == nil:
			t.Errorf("calicoctl %s succeeded with the datastore down: %s", strings.Join(args, " "), out)
		case took > 8*time.Second:
			t.Errorf("calicoctl %s took %s to fail; want about 5 s", strings.Join(args, " "), took)
		case strings.Contains(msg, "\n") || !strings.Contains(msg, "cannot reach the datastore"):
			t.Errorf("calicoctl %s: want one line saying the datastore cannot be reached, got:\n%s", strings.Join(args, " "), msg)
		}
	}

	// Host 2 stays cut off from etcd until its history has been compacted.
	block := "add table inet cfltblock; add chain inet cfltblock out { type filter hook output priority 0 ; }; " +
		"add rule inet cfltblock out ip daddr " + h1.Addr().String() + " tcp dport 2379 drop"
	if _, err := h2.Run(ctx, "nft", block); err != nil {
		t.Fatal(err)
	}
	blocked := true
	unblock := func() {
		if blocked {
			h2.Run(context.Background(), "nft", "delete table inet cfltblock")
			blocked = false
		}
	}
	defer unblock()

	// The user retries the add until it works.
	type addResult struct {
		at       time.Time
		attempts int
		err      error
	}
	added := make(chan addResult, 1)
	go func() {
		for attempts := 1; ; attempts++ {
			_, err := w.Ctl(ctx, h1, addArgs...)
			if err == nil || ctx.Err() != nil {
				added <- addResult{time.Now(), attempts, err}
				return
			}
			time.Sleep(time.Second)
		}
	}()

	time.Sleep(time.Until(stopped.Add(outage)))
	back := time.Now()
	if err := startEtcd(); err != nil {
		t.Fatal(err)
	}
	etcdUp = true
	t.Logf("datastore down for %.1f s, serving again %.1f s after its start", back.Sub(stopped).Seconds(), time.Since(back).Seconds())
	res := <-added
	if res.err != nil {
		t.Fatalf("adding worker-5 by retrying: %v", res.err)
	}
	w.Workloads["worker-5"] = &walkthrough.Workload{Name: "worker-5", Host: h1, Netns: ns5, IP: ip5}
	defer func() {
		w.Ctl(context.Background(), h1, "container", "remove", "worker-5")
		delete(w.Workloads, "worker-5")
	}()
	ctl(t, ctx, w, h1, "container", "worker-5", "profile", "append", "PROF_1")

	rev, err := compactEtcd(ctx, h1, w.Etcd)
	if err != nil {
		t.Fatalf("compacting etcd: %v", err)
	}
	unblock()
	converged := e2etest.WaitFor(t, 45*time.Second, "host2 routes worker-5 via host1 after re-listing", routedViaHost1)
	var replies int
	e2etest.WaitFor(t, 15*time.Second, "worker-3 and worker-5 ping each other", func() (bool, string) {
		replies = e2etest.PingReplies(ctx, w3.Netns, netip.Addr{}, ip5, 1) + e2etest.PingReplies(ctx, ns5, netip.Addr{}, w3.IP, 1)
		return replies == 2, fmt.Sprintf("%d/2 replies", replies)
	})
	log2, _ := os.ReadFile(filepath.Join(w.StateDir, "log", "calico", h2.Label, "calico-node.log"))
	compacted := strings.Contains(string(log2), "compacted")

	s := <-stream
	p := <-pings
	lost := p.Sent - p.Received
	t.Logf("FIGURE: datastore outage of %.0f s: iperf3 stream across hosts: %d broken connections, %.0f MB moved, slowest second %.1f MB, "+
		"%d seconds at 0; ping: %d/%d lost; worker-5 added on attempt %d, %.1f s after etcd was started again; "+
		"etcd compacted at revision %d while host2 was cut off; host2 routed worker-5 %.1f s after reconnecting (watch ended by compaction and re-listed: %v)",
		outage.Seconds(), boolInt(s.Err != nil), s.Bytes/1e6, s.minInterval()/1e6, s.zeroIntervals(), lost, p.Sent,
		res.attempts, res.at.Sub(back).Seconds(), rev, converged.Seconds(), compacted)
	if s.Err != nil {
		t.Errorf("the TCP stream broke during the datastore outage: %v", s.Err)
	}
	if len(s.Intervals) < seconds-1 || s.zeroIntervals() > 0 {
		t.Errorf("the TCP stream stalled: %d intervals, %d with no bytes: %v", len(s.Intervals), s.zeroIntervals(), s.Intervals)
	}
	if p.err != nil || p.Sent < seconds*4 || lost > 0 {
		t.Errorf("ping across the datastore outage: %d of %d lost (%v), want 0", lost, p.Sent, p.err)
	}
	if res.attempts < 2 {
		t.Errorf("the add succeeded on the first attempt: the outage was not seen")
	}
	if !compacted {
		t.Errorf("host2's agent never saw its watch fail on compacted history, so re-listing after compaction was not exercised")
	}
}

// compactEtcd compacts the datastore's history up to its current revision,
// with a client whose connections are made inside h's namespace.
func compactEtcd(ctx context.Context, h *lab.Host, endpoint string) (int64, error) {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := h.Do(func() (err error) {
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + endpoint},
		DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial)},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/calico", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	_, err = cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return rev, err
}
