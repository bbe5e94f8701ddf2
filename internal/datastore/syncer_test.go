package datastore_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

type recorder struct {
	mu        sync.Mutex
	state     map[string]string
	snapshots int
}

func (r *recorder) OnSnapshot(kvs map[string][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snapshots++
	r.state = map[string]string{}
	for k, v := range kvs {
		r.state[k] = string(v)
	}
}

func (r *recorder) OnUpdate(key string, value []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if value == nil {
		delete(r.state, key)
	} else {
		r.state[key] = string(value)
	}
}

func (r *recorder) get(key string) (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[key], r.snapshots
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: timed out", what)
}

// TestSyncFollowsChangesAcrossCompaction: the syncer delivers a
// snapshot, then changes, and keeps delivering after the history is compacted
// (a watch that falls behind a compaction re-lists; see Sync).
func TestSyncFollowsChangesAcrossCompaction(t *testing.T) {
	url := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ds.Close() })
	if err := ds.Put(ctx, datastore.Root+"a", "1"); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	go ds.Sync(ctx, datastore.Root, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	eventually(t, "initial snapshot", func() bool { v, n := r.get(datastore.Root + "a"); return v == `"1"` && n == 1 })

	ds.Put(ctx, datastore.Root+"b", "2")
	ds.DeleteKey(ctx, datastore.Root+"a", 0)
	eventually(t, "updates", func() bool {
		b, _ := r.get(datastore.Root + "b")
		a, _ := r.get(datastore.Root + "a")
		return b == `"2"` && a == ""
	})

	for i := 0; i < 5; i++ {
		ds.Put(ctx, datastore.Root+"c", i)
	}
	raw := etcdtest.Dial(t, url)
	resp, err := raw.Get(ctx, datastore.Root+"c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	ds.Put(ctx, datastore.Root+"d", "after")
	eventually(t, "change after compaction", func() bool { v, _ := r.get(datastore.Root + "d"); return v == `"after"` })
	if v, _ := r.get(datastore.Root + "c"); v != "4" {
		t.Errorf("c = %q, want 4", v)
	}
}

// TestConnectFailsFastOnDeadDatastore: a datastore that does not answer is a
// clear error within the operation timeout, not a hang.
func TestConnectFailsFastOnDeadDatastore(t *testing.T) {
	start := time.Now()
	_, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: []string{"http://127.0.0.1:1"}})
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if d := time.Since(start); d > datastore.OpTimeout+2*time.Second {
		t.Errorf("took %s to fail", d)
	}
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

// presence records whether each key is present, which a string map cannot
// tell apart from an empty value.
type presence struct {
	recorder
	present map[string]bool
}

func (p *presence) OnSnapshot(kvs map[string][]byte) {
	p.recorder.OnSnapshot(kvs)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.present = map[string]bool{}
	for k, v := range kvs {
		p.present[k] = v != nil
	}
}

func (p *presence) OnUpdate(key string, value []byte) {
	p.recorder.OnUpdate(key, value)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.present[key] = value != nil
}

func (p *presence) has(key string) (bool, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, known := p.present[key]
	return v, known
}

// TestSyncEmptyValueIsNotADeletion: a key overwritten with an empty value
// reaches the handler as an empty, non-nil value, in a listing and in a
// watch event, so the handler refuses it instead of taking it for a
// deletion (which would drop the last good record).
func TestSyncEmptyValueIsNotADeletion(t *testing.T) {
	url := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ds.Close() })
	raw := etcdtest.Dial(t, url)
	if _, err := raw.Put(ctx, datastore.Root+"listed", ""); err != nil {
		t.Fatal(err)
	}
	p := &presence{}
	go ds.Sync(ctx, datastore.Root, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	eventually(t, "snapshot with the empty value present", func() bool { v, known := p.has(datastore.Root + "listed"); return known && v })
	if _, err := raw.Put(ctx, datastore.Root+"watched", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "watched empty value present", func() bool { v, known := p.has(datastore.Root + "watched"); return known && v })
	ds.DeleteKey(ctx, datastore.Root+"watched", 0)
	eventually(t, "deletion", func() bool { v, known := p.has(datastore.Root + "watched"); return known && !v })
}

// TestSyncRangeLeavesOutStatus: an agent's range [Root, AgentKeysEnd) holds
// a pool and a node written before and after the snapshot, and never a
// status record: a heartbeat reaches no agent.
func TestSyncRangeLeavesOutStatus(t *testing.T) {
	url := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ds.Close() })
	for _, k := range []string{datastore.PoolKey("10.1.0.0/16"), datastore.StatusKey("host1")} {
		if err := ds.Put(ctx, k, "before"); err != nil {
			t.Fatal(err)
		}
	}
	r := &recorder{}
	go ds.SyncRange(ctx, datastore.Root, datastore.AgentKeysEnd, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	eventually(t, "snapshot", func() bool { v, n := r.get(datastore.PoolKey("10.1.0.0/16")); return v == `"before"` && n == 1 })
	for _, k := range []string{datastore.StatusKey("host1"), datastore.StatusKey("host2"), datastore.NodeKey("host2")} {
		if err := ds.Put(ctx, k, "after"); err != nil {
			t.Fatal(err)
		}
	}
	// The node record is written last: once it arrived, the status
	// records would have arrived before it.
	eventually(t, "node record", func() bool { v, _ := r.get(datastore.NodeKey("host2")); return v == `"after"` })
	for _, k := range []string{datastore.StatusKey("host1"), datastore.StatusKey("host2")} {
		if v, _ := r.get(k); v != "" {
			t.Errorf("%s reached the agent's range: %q", k, v)
		}
	}
}

// revRecorder is a RevisionHandler: it keeps each key's revision.
type revRecorder struct {
	recorder
	revs  map[string]int64
	snaps []datastore.Revisions
}

func (r *revRecorder) OnSnapshotAt(kvs map[string][]byte, revs datastore.Revisions) {
	r.recorder.OnSnapshot(kvs)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, revs)
	r.revs = map[string]int64{}
	for k, v := range revs.Mod {
		r.revs[k] = v
	}
}

func (r *revRecorder) OnUpdateAt(key string, value []byte, rev int64) {
	r.recorder.OnUpdate(key, value)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revs[key] = rev
}

func (r *revRecorder) rev(key string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revs[key]
}

// TestSyncHandsRevisions: a RevisionHandler learns the listed revision,
// the cluster, each listed key's creation and modification, and each
// change's revision (a deletion's own), as etcd reports them.
func TestSyncHandsRevisions(t *testing.T) {
	url := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	ds, err := datastore.Connect(ctx, datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ds.Close() })
	raw := etcdtest.Dial(t, url)
	a := datastore.Root + "a"
	created, err := raw.Put(ctx, a, "1")
	if err != nil {
		t.Fatal(err)
	}
	modified, err := raw.Put(ctx, a, "2")
	if err != nil {
		t.Fatal(err)
	}
	r := &revRecorder{}
	go ds.Sync(ctx, datastore.Root, r, slog.New(slog.NewTextHandler(io.Discard, nil)))
	eventually(t, "snapshot", func() bool { v, n := r.get(a); return v == "2" && n == 1 })
	r.mu.Lock()
	s := r.snaps[0]
	r.mu.Unlock()
	if s.Rev != modified.Header.Revision || s.Cluster != modified.Header.ClusterId || s.Cluster == 0 {
		t.Errorf("snapshot at %d of cluster %x, want %d of %x", s.Rev, s.Cluster, modified.Header.Revision, modified.Header.ClusterId)
	}
	if s.Created[a] != created.Header.Revision || s.Mod[a] != modified.Header.Revision {
		t.Errorf("%s created at %d, modified at %d; want %d, %d", a, s.Created[a], s.Mod[a], created.Header.Revision, modified.Header.Revision)
	}
	b := datastore.Root + "b"
	put, err := raw.Put(ctx, b, "x")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "update", func() bool { return r.rev(b) == put.Header.Revision })
	del, err := raw.Delete(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "deletion", func() bool { return r.rev(b) == del.Header.Revision })
}
