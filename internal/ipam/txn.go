// The transaction plumbing: reads that see one revision, guarded writes
// through the Store, and retries after lost races.

package ipam

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// maxAttempts bounds the retries of one operation after lost races. With the
// backoff below it is a few seconds of solid contention, far beyond what
// hosts with their own blocks ever see.
const maxAttempts = 100

// kv is a record as read (datastore.Record, in the fields the parsers take).
type kv struct {
	key   string
	value []byte
	rev   int64 // ModRevision
}

// read runs gets in one transaction, so they see one revision.
func (m *IPAM) read(ctx context.Context, gets ...datastore.Read) ([][]kv, error) {
	out, _, err := m.readAt(ctx, gets...)
	return out, err
}

// readAt is read that also returns the revision the gets saw.
func (m *IPAM) readAt(ctx context.Context, gets ...datastore.Read) ([][]kv, int64, error) {
	recs, rev, err := m.store.Read(ctx, gets...)
	if errors.Is(err, datastore.ErrUnreachable) {
		return nil, 0, err // already says what to do
	} else if err != nil {
		return nil, 0, fmt.Errorf("reading IPAM data from etcd: %w", err)
	}
	out := make([][]kv, len(recs))
	for i, r := range recs {
		out[i] = make([]kv, len(r))
		for j, e := range r {
			out[i][j] = kv{key: e.Key, value: e.Value, rev: e.Rev}
		}
	}
	return out, rev, nil
}

// commit runs a guarded write; false means a guard failed (someone else
// wrote first) and nothing was written.
func (m *IPAM) commit(ctx context.Context, cmps []datastore.Guard, ops []datastore.Write) (bool, error) {
	ok, err := m.store.Commit(ctx, cmps, ops)
	if errors.Is(err, datastore.ErrUnreachable) {
		// A write that timed out may or may not have been applied; either
		// way the state is consistent (one transaction), and `calicoctl
		// ipam check` shows a claim nobody holds.
		return false, err
	} else if err != nil {
		return false, fmt.Errorf("writing IPAM data to etcd: %w", err)
	}
	return ok, nil
}

// batchTxn gathers the guards and writes of one batched assignment:
// each block written, its pool and each handle must be unchanged since
// they were read, so a batch that raced another writer writes nothing.
type batchTxn struct {
	guards []datastore.Guard
	writes []datastore.Write
	pools  map[string]bool
}

func (b *batchTxn) block(sb storedBlock, rec api.Block, pool poolInfo) {
	b.guards = append(b.guards, datastore.Unchanged(sb.key, sb.rev))
	b.writes = append(b.writes, datastore.WriteJSON(sb.key, rec))
	if b.pools == nil {
		b.pools = map[string]bool{}
	}
	if !b.pools[pool.key] {
		b.pools[pool.key] = true
		b.guards = append(b.guards, datastore.Unchanged(pool.key, pool.rev))
	}
}

func (b *batchTxn) handle(h storedHandle, handle string, ip netip.Addr) {
	b.guards = append(b.guards, datastore.Unchanged(h.key, h.rev))
	b.writes = append(b.writes, datastore.WriteJSON(h.key, h.withIP(handle, ip)))
}

// handleOp writes a handle record, deleting it once it holds nothing.
func handleOp(key string, h api.Handle) datastore.Write {
	if len(h.IPs) == 0 {
		return datastore.WriteDelete(key)
	}
	return datastore.WriteJSON(key, h)
}

// retryBudget bounds one operation's retries in time as maxAttempts does in
// number: each etcd call has its own deadline, and this keeps a datastore
// that answers, but slowly, from multiplying it by a hundred.
const retryBudget = 20 * time.Second

// retry runs attempt until it is done or fails, backing off with jitter
// after each lost race so contending writers fall out of step.
func (m *IPAM) retry(ctx context.Context, attempt func() (bool, error)) error {
	start := time.Now()
	for i := range maxAttempts {
		done, err := attempt()
		if err != nil || done {
			return err
		}
		m.conflicts.Add(1)
		if time.Since(start) > retryBudget {
			return errorf(ErrConflict, "gave up after %s: other writers kept changing the same IPAM keys", retryBudget)
		}
		d := time.Duration(rand.Int64N(int64(time.Millisecond) << min(i, 5)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
	return errorf(ErrConflict, "gave up after %d attempts: other writers kept changing the same IPAM keys", maxAttempts)
}
