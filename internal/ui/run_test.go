package ui

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdserver"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

// etcd starts a real embedded etcd and connects to it; the client is closed
// before the server (see datastore's notes on shutdown). stop stops the
// server early.
func etcd(t *testing.T) (stop func(), ds *datastore.Client) {
	t.Helper()
	srv, err := etcdserver.Start(etcdserver.Config{
		DataDir:    t.TempDir(),
		ClientAddr: fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t)),
		PeerAddr:   fmt.Sprintf("127.0.0.1:%d", etcdtest.FreePort(t)),
	}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	stop = sync.OnceFunc(srv.Close)
	t.Cleanup(stop)
	ds, err = datastore.Connect(context.Background(), datastore.ConfigFromEnv(srv.ClientURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return stop, ds
}

// waitView waits until the rendered view satisfies ok.
func waitView(t *testing.T, s *Server, what string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		view, changed := s.current(DefaultPort)
		if ok(string(view)) {
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			t.Fatalf("the view never showed %s; last:\n%s", what, view)
		}
	}
}

func TestRunFollowsTheWatch(t *testing.T) {
	_, ds := etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	// Cancel (ending the watch) before the client and server close.
	t.Cleanup(cancel)
	if err := ds.Put(ctx, datastore.ProfileKey("BEFORE"), api.NewProfile("BEFORE")); err != nil {
		t.Fatal(err)
	}
	s := New(ds, Options{})
	go s.Run(ctx)
	waitView(t, s, "the snapshot", func(v string) bool { return strings.Contains(v, `data-profile="BEFORE"`) })
	start := time.Now()
	if err := ds.Put(ctx, datastore.ProfileKey("AFTER"), api.NewProfile("AFTER")); err != nil {
		t.Fatal(err)
	}
	waitView(t, s, "a new profile", func(v string) bool { return strings.Contains(v, `data-profile="AFTER"`) })
	t.Logf("a write reached the view in %v", time.Since(start).Round(time.Millisecond))
	if err := ds.DeleteKey(ctx, datastore.ProfileKey("BEFORE"), 0); err != nil {
		t.Fatal(err)
	}
	waitView(t, s, "the deletion", func(v string) bool { return !strings.Contains(v, `data-profile="BEFORE"`) })
}

// A host whose agent stops reporting turns down on the page with no
// datastore change at all: the view is re-judged as time passes.
func TestSilentAgentTurnsDown(t *testing.T) {
	_, ds := etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	st := api.NodeStatus{Node: "host1", Ready: true, Updated: time.Unix(0, clock.Load()).UTC().Format(time.RFC3339)}
	for _, w := range []struct {
		key string
		v   any
	}{{datastore.NodeKey("host1"), api.Node{Name: "host1", IPv4: "10.0.0.1/24"}}, {datastore.StatusKey("host1"), st}} {
		if err := ds.Put(ctx, w.key, w.v); err != nil {
			t.Fatal(err)
		}
	}
	s := New(ds, Options{})
	s.now = func() time.Time { return time.Unix(0, clock.Load()) }
	s.every = 100 * time.Millisecond
	go s.Run(ctx)
	waitView(t, s, "host1 ready", func(v string) bool { return strings.Contains(v, `data-host="host1" data-state="ready"`) })
	clock.Add(int64(api.StatusStale + time.Second))
	waitView(t, s, "host1 down", func(v string) bool { return strings.Contains(v, `data-host="host1" data-state="down"`) })
}

func TestProbeNoticesALostDatastore(t *testing.T) {
	stop, ds := etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s := New(ds, Options{})
	s.every = 200 * time.Millisecond
	// The probe and the renderer only: without the watch, the server shuts
	// down at once.
	go s.probe(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.dirty:
				s.render()
			}
		}
	}()
	time.Sleep(3 * s.every)
	if view, _ := s.current(DefaultPort); strings.Contains(string(view), `id="lost"`) {
		t.Fatalf("a live datastore is reported lost:\n%s", view)
	}
	stop()
	waitView(t, s, "the loss", func(v string) bool {
		return strings.Contains(v, `id="lost"`) && strings.Contains(v, "cannot reach the datastore")
	})
}
