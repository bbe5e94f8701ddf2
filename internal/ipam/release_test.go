package ipam

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// TestReleaseFromChecksHolder: releasing for a handle frees only what that
// handle holds. Before ReleaseFrom every caller released by address alone,
// so a stale record (a workload whose address had since been released and
// reassigned) freed another workload's address, which was then handed out
// twice.
func TestReleaseFromChecksHolder(t *testing.T) {
	cli, m, ctx := setup(t)
	addPool(t, cli, api.Pool{CIDR: "192.168.100.0/24"})
	ip := a("192.168.100.7")
	if err := m.Assign(ctx, ip, "host1~victim", "host1"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.ReleaseFrom(ctx, ip, "host1~intruder"), ErrNotHolder,
		"192.168.100.7 is held by host1~victim, not by host1~intruder; left assigned")
	if in, err := m.Info(ctx, ip); err != nil || !in.Assigned || in.Handle != "host1~victim" {
		t.Fatalf("after a refused release: %+v %v", in, err)
	}
	// The honest holder still releases it, and its handle record goes.
	if err := m.ReleaseFrom(ctx, ip, "host1~victim"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, m.ReleaseFrom(ctx, ip, "host1~victim"), ErrNotAssigned, "192.168.100.7 is not assigned")
	mustCheck(t, m, ctx, map[string]bool{})
	if err := m.ReleaseFrom(ctx, ip, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("an empty handle must be refused, not mean anyone: %v", err)
	}
}

// TestCallsHaveDeadlines: against an etcd that accepts connections and never
// answers (as a stopped process does: the kernel still completes the TCP
// handshake), every IPAM call returns an error saying the datastore did not
// answer, after OpTimeout for the first and QuickTimeout for the next, even
// when the caller's context has no deadline at all.
func TestCallsHaveDeadlines(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			select {
			case held <- c: // never answered, closed at the end
			default:
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	})
	url := "http://" + l.Addr().String()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	m := New(datastore.Adopt(cli))
	ctx := context.Background() // as calicoctl's: no deadline

	start := time.Now()
	_, err = m.AutoAssign(ctx, "host1~w", "host1", 4, nil)
	first := time.Since(start)
	if !errors.Is(err, datastore.ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach the datastore at "+url+": no answer within 5s") {
		t.Fatalf("AutoAssign: want the datastore reported unreachable, got %v", err)
	}
	start = time.Now()
	err = m.ReleaseFrom(ctx, a("192.168.100.1"), "host1~w")
	second := time.Since(start)
	if !errors.Is(err, datastore.ErrUnreachable) {
		t.Fatalf("ReleaseFrom: want the datastore reported unreachable, got %v", err)
	}
	t.Logf("FIGURE: IPAM against a silent etcd: first call failed after %s, the next after %s", first.Round(time.Millisecond), second.Round(time.Millisecond))
	if first > datastore.OpTimeout+3*time.Second || second > datastore.QuickTimeout+3*time.Second {
		t.Errorf("calls took %s and %s; want about %s and %s", first, second, datastore.OpTimeout, datastore.QuickTimeout)
	}
}
