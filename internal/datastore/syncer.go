package datastore

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SyncHandler receives the datastore's state, always from one goroutine.
type SyncHandler interface {
	// OnSnapshot replaces everything known under the prefix.
	OnSnapshot(kvs map[string][]byte)
	// OnUpdate applies one change (value is nil when deleted).
	OnUpdate(key string, value []byte)
}

// RevisionHandler is a SyncHandler that also learns where each change sits
// in the datastore's history; the syncer then calls these instead of
// OnSnapshot and OnUpdate.
type RevisionHandler interface {
	SyncHandler
	// OnSnapshotAt is OnSnapshot with the list's revisions.
	OnSnapshotAt(kvs map[string][]byte, revs Revisions)
	// OnUpdateAt is OnUpdate with the change's revision.
	OnUpdateAt(key string, value []byte, rev int64)
}

// Revisions places a snapshot in the datastore's history: the cluster
// (revisions of another datastore mean nothing), the revision listed, and
// each key's creation and last modification.
type Revisions struct {
	Cluster uint64
	Rev     int64
	Mod     map[string]int64
	Created map[string]int64
}

// Sync lists prefix, hands the handler a snapshot, then follows changes with a
// watch. When the watch breaks (datastore down, history compacted past our
// revision) it lists again and hands over a fresh snapshot, so the handler is
// level-triggered and never misses a change. It returns when ctx ends.
func (c *Client) Sync(ctx context.Context, prefix string, h SyncHandler, log *slog.Logger) {
	c.SyncRange(ctx, prefix, clientv3.GetPrefixRangeEnd(prefix), h, log)
}

// SyncRange is Sync over the keys from key up to (not including) end.
func (c *Client) SyncRange(ctx context.Context, key, end string, h SyncHandler, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := c.listInto(ctx, key, end, h)
		if err != nil {
			log.Warn("datastore list failed; retrying", "err", err, "in", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		err = c.follow(ctx, key, end, rev, h)
		if ctx.Err() != nil {
			return
		}
		log.Warn("datastore watch ended; re-listing", "err", err)
		sleep(ctx, 200*time.Millisecond)
	}
}

func (c *Client) listInto(ctx context.Context, key, end string, h SyncHandler) (int64, error) {
	// Always the full OpTimeout, never QuickTimeout: a large snapshot may
	// take longer than a single record, and the syncer retries anyway.
	octx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	resp, err := c.etcd.Get(octx, key, clientv3.WithRange(end))
	if err != nil {
		if isDeadline(err) {
			return 0, &UnreachableError{Where: c.Where(), After: OpTimeout}
		}
		return 0, err
	}
	kvs := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = present(kv.Value)
	}
	if rh, ok := h.(RevisionHandler); ok {
		revs := Revisions{Cluster: resp.Header.ClusterId, Rev: resp.Header.Revision,
			Mod: make(map[string]int64, len(resp.Kvs)), Created: make(map[string]int64, len(resp.Kvs))}
		for _, kv := range resp.Kvs {
			revs.Mod[string(kv.Key)] = kv.ModRevision
			revs.Created[string(kv.Key)] = kv.CreateRevision
		}
		rh.OnSnapshotAt(kvs, revs)
	} else {
		h.OnSnapshot(kvs)
	}
	return resp.Header.Revision, nil
}

func (c *Client) follow(ctx context.Context, key, end string, rev int64, h SyncHandler) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := c.etcd.Watch(wctx, key, clientv3.WithRange(end), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	for resp := range wch {
		// A compacted revision (rpctypes.ErrCompacted) or a lost leader both
		// end this watch; the caller re-lists, which is always correct.
		if err := resp.Err(); err != nil {
			return err
		}
		rh, _ := h.(RevisionHandler)
		for _, ev := range resp.Events {
			var v []byte
			if ev.Type != clientv3.EventTypeDelete {
				v = present(ev.Kv.Value)
			}
			// A deletion's ModRevision is the deletion's own.
			if rh != nil {
				rh.OnUpdateAt(string(ev.Kv.Key), v, ev.Kv.ModRevision)
			} else {
				h.OnUpdate(string(ev.Kv.Key), v)
			}
		}
	}
	return ctx.Err()
}

// present keeps an empty stored value distinct from a deletion: protobuf
// decodes an empty value as nil, and nil means "deleted" to a SyncHandler,
// so a key overwritten with "" would otherwise make the agent drop the
// last good record instead of refusing the empty one.
func present(v []byte) []byte {
	if v == nil {
		return []byte{}
	}
	return v
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
