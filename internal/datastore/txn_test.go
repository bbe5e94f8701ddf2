package datastore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
)

func connect(t *testing.T) (*datastore.Client, string) {
	t.Helper()
	url := etcdtest.Start(t)
	ds, err := datastore.Connect(context.Background(), datastore.Config{Endpoints: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ds.Close() })
	return ds, url
}

// TestTxnGuards: writes land only while every guard holds, all or none.
func TestTxnGuards(t *testing.T) {
	ds, _ := connect(t)
	ctx := context.Background()
	a, b := datastore.Root+"t/a", datastore.Root+"t/b"

	// Absent (rev 0): the first create wins, the second is refused.
	ok, err := ds.Commit(ctx, []datastore.Guard{datastore.Unchanged(a, 0)}, []datastore.Write{datastore.WriteValue(a, "1")})
	if err != nil || !ok {
		t.Fatalf("create of an absent key: ok=%v err=%v", ok, err)
	}
	ok, err = ds.Commit(ctx, []datastore.Guard{datastore.Unchanged(a, 0)}, []datastore.Write{datastore.WriteValue(a, "2")})
	if err != nil || ok {
		t.Fatalf("second create: ok=%v err=%v, want refused", ok, err)
	}

	r, rev, err := ds.Read(ctx, datastore.ReadKey(a), datastore.ReadPrefix(datastore.Root+"t/"), datastore.ReadKey(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(r) != 3 || len(r[0]) != 1 || string(r[0][0].Value) != "1" || len(r[1]) != 1 || len(r[2]) != 0 || rev < r[0][0].Rev {
		t.Fatalf("read = %+v at %d", r, rev)
	}
	aRev := r[0][0].Rev

	// A stale revision refuses the whole transaction: b is not written.
	ok, err = ds.Commit(ctx, []datastore.Guard{datastore.Unchanged(a, aRev-1)},
		[]datastore.Write{datastore.WriteJSON(b, map[string]int{"x": 1}), datastore.WriteDelete(a)})
	if err != nil || ok {
		t.Fatalf("stale guard: ok=%v err=%v, want refused", ok, err)
	}
	if keys, _ := ds.Keys(ctx, datastore.Root+"t/"); len(keys) != 1 || keys[0] != a {
		t.Fatalf("after a refused transaction: keys %v, want only %s", keys, a)
	}

	// NoneChangedAfter: holds until a key under the prefix is written.
	guard := datastore.NoneChangedAfter(datastore.Root+"t/", rev)
	ok, err = ds.Commit(ctx, []datastore.Guard{guard}, []datastore.Write{datastore.WriteJSON(b, map[string]int{"x": 1})})
	if err != nil || !ok {
		t.Fatalf("nothing changed since the read: ok=%v err=%v", ok, err)
	}
	ok, err = ds.Commit(ctx, []datastore.Guard{guard}, []datastore.Write{datastore.WriteDelete(a)})
	if err != nil || ok {
		t.Fatalf("after b was written: ok=%v err=%v, want refused", ok, err)
	}
	keys, err := ds.Keys(ctx, datastore.Root+"t/")
	if err != nil || strings.Join(keys, " ") != a+" "+b {
		t.Fatalf("keys = %v, %v; want %s %s", keys, err, a, b)
	}
}

// TestListWarnsThroughTheLogger: a record that does not decode is skipped
// and reported to the client's logger (a library does not print).
func TestListWarnsThroughTheLogger(t *testing.T) {
	ds, _ := connect(t)
	ctx := context.Background()
	var buf bytes.Buffer
	ds.SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	if err := ds.Put(ctx, datastore.Root+"l/good", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Commit(ctx, nil, []datastore.Write{datastore.WriteValue(datastore.Root+"l/bad", "{not json")}); err != nil {
		t.Fatal(err)
	}
	got, err := datastore.List[map[string]int](ctx, ds, datastore.Root+"l/")
	if err != nil || len(got) != 1 || got[0].Value["n"] != 1 {
		t.Fatalf("List = %+v, %v; want the good record only", got, err)
	}
	if !strings.Contains(buf.String(), "skipped undecodable datastore records") || !strings.Contains(buf.String(), datastore.Root+"l/bad") {
		t.Errorf("logger got %q; want the skipped key named", buf.String())
	}
}
