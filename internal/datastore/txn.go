package datastore

import (
	"context"
	"encoding/json"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The types below are the datastore's transaction vocabulary: a caller
// (IPAM) says what it reads, which revisions its writes depend on and what
// it writes, and never holds an etcd client or builds an etcd operation.

// Read is one read of a transaction: a key, or every key under a prefix.
type Read struct {
	key              string
	prefix, keysOnly bool
}

// ReadKey reads one key.
func ReadKey(key string) Read { return Read{key: key} }

// ReadPrefix reads every key under prefix, in key order.
func ReadPrefix(prefix string) Read { return Read{key: prefix, prefix: true} }

// ReadRevision reads one key's mod revision without its value (a Record
// with a nil Value, or none when the key is absent).
func ReadRevision(key string) Read { return Read{key: key, keysOnly: true} }

// ReadKeysUnder reads the keys under prefix without their values.
func ReadKeysUnder(prefix string) Read { return Read{key: prefix, prefix: true, keysOnly: true} }

func (r Read) op() clientv3.Op {
	var opts []clientv3.OpOption
	if r.prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if r.keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	return clientv3.OpGet(r.key, opts...)
}

// Record is one stored key as read: its value (nil for a keys-only read)
// and its mod revision.
type Record struct {
	Key   string
	Value []byte
	Rev   int64
}

// Guard is a condition a transaction's writes depend on.
type Guard struct {
	key string
	rev int64
	// after: no key under the prefix key changed after revision rev.
	after bool
	// exists: the key exists, at any revision.
	exists bool
}

// Unchanged guards on key still being at revision rev, as read; rev 0
// means the key was absent and must still be.
func Unchanged(key string, rev int64) Guard { return Guard{key: key, rev: rev} }

// NoneChangedAfter guards on no key under prefix having been written after
// revision rev (the revision a read saw); a key deleted since is not seen.
func NoneChangedAfter(prefix string, rev int64) Guard {
	return Guard{key: prefix, rev: rev, after: true}
}

func (g Guard) cmp() clientv3.Cmp {
	switch {
	case g.exists:
		return clientv3.Compare(clientv3.CreateRevision(g.key), ">", 0)
	case g.after:
		return clientv3.Compare(clientv3.ModRevision(g.key), "<", g.rev+1).WithPrefix()
	case g.rev == 0:
		return clientv3.Compare(clientv3.CreateRevision(g.key), "=", 0)
	default:
		return clientv3.Compare(clientv3.ModRevision(g.key), "=", g.rev)
	}
}

// Write is one write of a transaction.
type Write struct {
	key   string
	value string
	del   bool
}

// WriteValue stores value at key as it is (an affinity claim's CIDR).
func WriteValue(key, value string) Write { return Write{key: key, value: value} }

// WriteJSON stores v as JSON at key. The record types of package api
// marshal without error (no channels, funcs or NaNs).
func WriteJSON(key string, v any) Write {
	b, _ := json.Marshal(v)
	return Write{key: key, value: string(b)}
}

// WriteDelete deletes key.
func WriteDelete(key string) Write { return Write{key: key, del: true} }

// Key is the key the write changes.
func (w Write) Key() string { return w.key }

// Deletes says whether the write is a deletion.
func (w Write) Deletes() bool { return w.del }

func (w Write) op() clientv3.Op {
	if w.del {
		return clientv3.OpDelete(w.key)
	}
	return clientv3.OpPut(w.key, w.value)
}

// Read runs reads in one transaction, so they all see one revision, and
// returns the records of each read (in key order) and that revision.
func (c *Client) Read(ctx context.Context, reads ...Read) ([][]Record, int64, error) {
	ops := make([]clientv3.Op, len(reads))
	for i, r := range reads {
		ops[i] = r.op()
	}
	var resp *clientv3.TxnResponse
	err := c.calls.Do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.etcd.Txn(ctx).Then(ops...).Commit()
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([][]Record, len(resp.Responses))
	for i, r := range resp.Responses {
		for _, e := range r.GetResponseRange().GetKvs() {
			out[i] = append(out[i], Record{Key: string(e.Key), Value: e.Value, Rev: e.ModRevision})
		}
	}
	return out, resp.Header.Revision, nil
}

// Commit applies writes in one transaction if every guard holds; false
// (and nothing written) when one did not. A call that got no answer in time
// (ErrUnreachable) may or may not have been applied, but never in part.
func (c *Client) Commit(ctx context.Context, guards []Guard, writes []Write) (bool, error) {
	ok, _, err := c.commit(ctx, guards, writes)
	return ok, err
}

// commit is Commit that also returns the revision the transaction ran at:
// the mod revision of every key it wrote.
func (c *Client) commit(ctx context.Context, guards []Guard, writes []Write) (bool, int64, error) {
	cmps := make([]clientv3.Cmp, len(guards))
	for i, g := range guards {
		cmps[i] = g.cmp()
	}
	ops := make([]clientv3.Op, len(writes))
	for i, w := range writes {
		ops[i] = w.op()
	}
	var resp *clientv3.TxnResponse
	err := c.calls.Do(ctx, func(ctx context.Context) (err error) {
		resp, err = c.etcd.Txn(ctx).If(cmps...).Then(ops...).Commit()
		return err
	})
	if err != nil {
		return false, 0, err
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// Keys lists the keys under prefix, in key order, without their values.
func (c *Client) Keys(ctx context.Context, prefix string) ([]string, error) {
	r, _, err := c.Read(ctx, ReadKeysUnder(prefix))
	if err != nil {
		return nil, err
	}
	out := make([]string, len(r[0]))
	for i, e := range r[0] {
		out[i] = e.Key
	}
	return out, nil
}
