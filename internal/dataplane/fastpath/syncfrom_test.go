package fastpath

import (
	"fmt"
	"maps"
	"os"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/calico-go/calico/internal/dataplane/tcx"
)

func newHashMap(tb testing.TB, max uint32) *ebpf.Map {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("needs root: makes BPF maps; CI runs as root")
	}
	mp, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: max})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mp.Close() })
	return mp
}

func mapContents(t *testing.T, mp *ebpf.Map) map[uint32]uint32 {
	t.Helper()
	out := map[uint32]uint32{}
	var k, v uint32
	it := mp.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSyncFrom: the map ends up holding exactly what is wanted, whether
// the last contents are known (only the difference written) or not (read
// back first); a failed write forgets them, so the next call reads the map
// and repairs what the failure left.
func TestSyncFrom(t *testing.T) {
	mp := newHashMap(t, 4)
	if err := mp.Put(uint32(9), uint32(9)); err != nil { // a predecessor's entry
		t.Fatal(err)
	}
	var have map[uint32]uint32
	steps := []map[uint32]uint32{
		{1: 1, 2: 2},       // unknown contents: read, 9 deleted
		{1: 1, 2: 3, 4: 4}, // known: 2 changed, 4 added
		{4: 4},             // known: 1 and 2 deleted
	}
	for i, want := range steps {
		if err := syncFrom(mp, maps.Clone(want), &have); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := mapContents(t, mp); !maps.Equal(got, want) {
			t.Fatalf("step %d: map holds %v, want %v", i, got, want)
		}
	}
	// Five entries do not fit: the write fails and the contents are
	// forgotten.
	if err := syncFrom(mp, map[uint32]uint32{1: 1, 2: 2, 3: 3, 5: 5, 6: 6}, &have); err == nil || have != nil {
		t.Fatalf("overfull write: err %v, have %v; want an error and nothing remembered", err, have)
	}
	want := map[uint32]uint32{7: 7}
	if err := syncFrom(mp, maps.Clone(want), &have); err != nil {
		t.Fatal(err)
	}
	if got := mapContents(t, mp); !maps.Equal(got, want) {
		t.Fatalf("after a failed write: map holds %v, want %v", got, want)
	}
}

// BenchmarkSyncOneChange: one workload's entries change next to n others,
// as on a container start: the map read back whole (tcx.SyncMap) against
// only the difference written (syncFrom).
func BenchmarkSyncOneChange(b *testing.B) {
	for _, n := range []int{10, 1000} {
		base := map[uint32]uint32{}
		for i := range n {
			base[uint32(i)] = 1
		}
		next := maps.Clone(base)
		next[uint32(n)] = 1
		b.Run(fmt.Sprintf("read-back/%d", n), func(b *testing.B) {
			mp := newHashMap(b, 4096)
			for i := range b.N {
				want := base
				if i%2 == 1 {
					want = next
				}
				if err := tcx.SyncMap(mp, want, false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("difference/%d", n), func(b *testing.B) {
			mp := newHashMap(b, 4096)
			var have map[uint32]uint32
			for i := range b.N {
				want := base
				if i%2 == 1 {
					want = next
				}
				if err := syncFrom(mp, maps.Clone(want), &have); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
