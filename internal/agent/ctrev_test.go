package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// TestConntrackRevFile: the saved revision reads back; a missing,
// unreadable or corrupt file, one of another datastore or one ahead of the
// datastore is no revision (with the reason to log), never a crash.
func TestConntrackRevFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", conntrackRevFile)
	ds := ctDatastore{cluster: 0xba8922d7af06ed93, epoch: 7}
	if rev, why := loadConntrackRev(path, ds, 100); rev != 0 || !strings.Contains(why, "first start") {
		t.Errorf("missing file: rev %d, why %q; want 0 and the first start", rev, why)
	}
	if err := saveConntrackRev(path, ds, 42); err != nil {
		t.Fatal(err)
	}
	if rev, why := loadConntrackRev(path, ds, 100); rev != 42 || why != "" {
		t.Errorf("after saving 42: rev %d, why %q", rev, why)
	}
	if err := saveConntrackRev(path, ds, 43); err != nil {
		t.Fatal(err)
	}
	if rev, _ := loadConntrackRev(path, ds, 100); rev != 43 {
		t.Errorf("after saving 43: rev %d", rev)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "state", conntrackRevFile+".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	for what, want := range map[string]struct {
		ds  ctDatastore
		now int64
	}{
		"another cluster":   {ctDatastore{cluster: 1, epoch: 7}, 100},
		"another datastore": {ctDatastore{cluster: ds.cluster, epoch: 8}, 100},
		"ahead":             {ds, 40},
	} {
		if rev, why := loadConntrackRev(path, want.ds, want.now); rev != 0 || why == "" {
			t.Errorf("%s: rev %d, why %q; want 0 and a reason", what, rev, why)
		}
	}
	for _, bad := range []string{"", "garbage", "\x00\x00\x00", "cluster=ba8922d7af06ed93 epoch=7 revision=",
		"cluster=ba8922d7af06ed93 epoch=7 revision=43", "cluster=ba8922d7af06ed93 epoch=7 revision=43\nmore",
		"cluster=ba8922d7af06ed93 epoch=7 revision=-5\n", "cluster=ba8922d7af06ed93 epoch=7 revision=0\n",
		"cluster=ba8922d7af06ed93 epoch=7 revision=99999999999999999999999\n", "cluster=zz epoch=7 revision=43\n",
		"cluster=ba8922d7af06ed93  epoch=7 revision=43\n", "cluster=ba8922d7af06ed93 epoch=7 revision=043\n",
		strings.Repeat("x", 1<<16)} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if rev, why := loadConntrackRev(path, ds, 100); rev != 0 || !strings.HasPrefix(why, "corrupt") || len(why) > 200 {
			t.Errorf("file %q: rev %d, why %q; want 0 and corrupt (short)", truncate(bad, 40), rev, why)
		}
	}
	// A directory where the file should be: unreadable, and not writable
	// either (the agent logs that and carries on).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if rev, why := loadConntrackRev(path, ds, 100); rev != 0 || !strings.HasPrefix(why, "unreadable") {
		t.Errorf("a directory: rev %d, why %q", rev, why)
	}
	if err := saveConntrackRev(path, ds, 44); err == nil {
		t.Error("saving over a directory worked")
	}
}

// TestStartOwesChangedRecords: a starting agent owes a flush to the
// addresses of the records modified after the saved revision (another
// host's workload given an old address while no agent ran here), not to
// the others; with no usable revision, to every other host's address,
// with a log line saying why. Each flush that succeeds saves the revision
// its Note had seen.
func TestStartOwesChangedRecords(t *testing.T) {
	var logs bytes.Buffer
	dir := t.TempDir()
	a := &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.NewTextHandler(&logs, nil)), snap: calc.NewSnapshot(),
		trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
		epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
		conntrack: netdev.NewEndpointConntrack(), revFile: filepath.Join(dir, conntrackRevFile)}
	defer a.conntrack.Close()
	pool, err := json.Marshal(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26})
	if err != nil {
		t.Fatal(err)
	}
	ep := func(node, workload string, ip netip.Addr) []byte {
		b, err := json.Marshal(api.Endpoint{Node: node, Workload: workload, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName(node, workload),
			WorkloadIface: "eth0", IPv4Nets: []string{ip.String() + "/32"}, Profiles: []string{"P"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mine, old, reused, later := netip.MustParseAddr("10.90.1.5"), netip.MustParseAddr("10.90.2.7"),
		netip.MustParseAddr("10.90.2.8"), netip.MustParseAddr("10.90.3.9")
	keys := map[string][]byte{
		datastore.PoolKey("10.90.0.0/16"): pool,
		datastore.NodeKey("h1"):           []byte(`{"name":"h1"}`),
		datastore.EndpointKey("h1", "w1"): ep("h1", "w1", mine),
		datastore.EndpointKey("h2", "w9"): ep("h2", "w9", old),
		datastore.EndpointKey("h2", "w5"): ep("h2", "w5", reused),
	}
	mod := map[string]int64{datastore.PoolKey("10.90.0.0/16"): 2, datastore.NodeKey("h1"): 50, datastore.EndpointKey("h1", "w1"): 12,
		datastore.EndpointKey("h2", "w9"): 15, datastore.EndpointKey("h2", "w5"): 31}
	created := map[string]int64{datastore.NodeKey("h1"): 3}
	a.OnSnapshotAt(keys, datastore.Revisions{Cluster: 0xabc, Rev: 55, Mod: mod, Created: created})
	if len(a.snap.Endpoints) != 3 {
		t.Fatalf("snapshot holds %d endpoints, want 3", len(a.snap.Endpoints))
	}
	// Another host's workload added after the snapshot, before the first pass.
	a.OnUpdateAt(datastore.EndpointKey("h3", "w7"), ep("h3", "w7", later), 60)
	changed := func() []netip.Addr {
		a.mu.Lock()
		defer a.mu.Unlock()
		out := a.changedAddrsLocked()
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	ds := ctDatastore{cluster: 0xabc, epoch: 3}

	// Saved at 20: w5 (31) and w7 (60) changed since, w1 and w9 did not.
	if err := saveConntrackRev(a.revFile, ds, 20); err != nil {
		t.Fatal(err)
	}
	if got, want := changed(), []netip.Addr{reused, later}; !slices.Equal(got, want) {
		t.Errorf("saved revision 20: owed %v, want %v", got, want)
	}
	// None saved, corrupt, or of the datastore's former life (this node's
	// record created anew): every other host's address.
	for what, body := range map[string]string{
		"corrupt":            "cluster=abc epoch=3 revision=2O\n",
		"another datastore":  formatConntrackRev(ctDatastore{cluster: 0xabc, epoch: 1}, 20),
		"ahead of the store": formatConntrackRev(ds, 61),
	} {
		logs.Reset()
		if err := os.WriteFile(a.revFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, want := changed(), []netip.Addr{old, reused, later}; !slices.Equal(got, want) {
			t.Errorf("%s: owed %v, want %v", what, got, want)
		}
		if !strings.Contains(logs.String(), "no usable record of the last agent's datastore revision") {
			t.Errorf("%s: no log line says why; logs: %s", what, logs.String())
		}
	}
	if err := os.Remove(a.revFile); err != nil {
		t.Fatal(err)
	}
	if got, want := changed(), []netip.Addr{old, reused, later}; !slices.Equal(got, want) {
		t.Errorf("no file: owed %v, want %v", got, want)
	}

	// A Note, then a flush with nothing owed (no netlink): the revision
	// the Note saw is saved; a change after the Note is not covered.
	a.noteConntrackAgain(nil)
	a.OnUpdateAt(datastore.EndpointKey("h3", "w7"), nil, 70)
	if err := a.flushConntrack(); err != nil {
		t.Fatal(err)
	}
	if rev, why := loadConntrackRev(a.revFile, ds, 70); rev != 60 {
		t.Errorf("after a flush: saved %d (%s), want 60", rev, why)
	}
	// Within ctRevSaveEvery of that save, the next flush's revision waits
	// for the agent's exit (or a later flush).
	a.noteConntrackAgain(nil)
	if err := a.flushConntrack(); err != nil {
		t.Fatal(err)
	}
	if rev, _ := loadConntrackRev(a.revFile, ds, 70); rev != 60 {
		t.Errorf("a second flush at once: saved %d, want 60 still", rev)
	}
	a.saveConntrackRev(true)
	if rev, why := loadConntrackRev(a.revFile, ds, 70); rev != 70 {
		t.Errorf("at exit: saved %d (%s), want 70", rev, why)
	}
	if got := a.conntrack.Owed(); len(got) != 0 {
		t.Errorf("owed after the flush: %v", got)
	}
}

// TestSavedRevisionFollowsRestoredDatastore: etcd restored from a backup
// (same cluster ID: `etcdutl snapshot restore` with the same member list
// and token gives the same one; this node's record older than the backup)
// counts revisions again from the backup's. A running agent that saved 70
// before the restore and has flushed up to 45 since must save 45, not
// keep 70: else, once stopped, a record another host changes at 50 (an
// address changing hands) is taken as flushed by the next start, whose
// datastore is at 100 by then, and this host's entries of the address's
// old holder survive.
func TestSavedRevisionFollowsRestoredDatastore(t *testing.T) {
	dir := t.TempDir()
	revFile := filepath.Join(dir, conntrackRevFile)
	newAgent := func() *Agent {
		return &Agent{cfg: Config{Name: "h1"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), snap: calc.NewSnapshot(),
			trigger: make(chan struct{}, 1), relabeled: map[string]api.Endpoint{},
			epEdits: map[string]calc.EndpointEdit{}, blockEdits: map[string]calc.BlockEdit{},
			conntrack: netdev.NewEndpointConntrack(), revFile: revFile}
	}
	ep := func(workload string, ip string) []byte {
		b, err := json.Marshal(api.Endpoint{Node: "h2", Workload: workload, Orchestrator: "netns", InterfaceName: api.WorkloadIfaceName("h2", workload),
			WorkloadIface: "eth0", IPv4Nets: []string{ip + "/32"}, Profiles: []string{"P"}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pool, err := json.Marshal(api.Pool{CIDR: "10.90.0.0/16", BlockSize: 26})
	if err != nil {
		t.Fatal(err)
	}
	snapshot := func(a *Agent, rev int64, eps map[string]int64) {
		keys := map[string][]byte{datastore.PoolKey("10.90.0.0/16"): pool, datastore.NodeKey("h1"): []byte(`{"name":"h1"}`)}
		mod := map[string]int64{datastore.PoolKey("10.90.0.0/16"): 2, datastore.NodeKey("h1"): 3}
		for name, r := range eps {
			ip := "10.90.2.8" // "old"'s address, then "new"'s
			if name == "other" {
				ip = "10.90.2.9"
			}
			keys[datastore.EndpointKey("h2", name)] = ep(name, ip)
			mod[datastore.EndpointKey("h2", name)] = r
		}
		a.OnSnapshotAt(keys, datastore.Revisions{Cluster: 0xabc, Rev: rev, Mod: mod, Created: map[string]int64{datastore.NodeKey("h1"): 3}})
	}
	flushAt := func(a *Agent) {
		a.noteConntrackAgain(nil)
		if err := a.flushConntrack(); err != nil {
			t.Fatal(err)
		}
	}

	// Before the restore: flushed and saved up to 70.
	a := newAgent()
	snapshot(a, 70, map[string]int64{"old": 60})
	flushAt(a)
	a.saveConntrackRev(true)
	if rev, why := loadConntrackRev(revFile, ctDatastore{0xabc, 3}, 70); rev != 70 {
		t.Fatalf("before the restore: saved %d (%s), want 70", rev, why)
	}
	// The watch breaks; the restored datastore lists at 40 (the backup's
	// revision), and the agent follows it up to 45, then stops.
	snapshot(a, 40, map[string]int64{"old": 30})
	a.OnUpdateAt(datastore.EndpointKey("h2", "other"), ep("other", "10.90.2.9"), 45)
	flushAt(a)
	a.saveConntrackRev(true)
	a.conntrack.Close()

	// While no agent runs here, "old" goes and "new" takes its address at
	// 50; the next start finds the datastore at 100.
	b := newAgent()
	defer b.conntrack.Close()
	snapshot(b, 100, map[string]int64{"other": 45, "new": 50})
	b.mu.Lock()
	owed := b.changedAddrsLocked()
	b.mu.Unlock()
	if !slices.Contains(owed, netip.MustParseAddr("10.90.2.8")) {
		saved, _ := loadConntrackRev(revFile, ctDatastore{0xabc, 3}, 100)
		t.Errorf("restart after the restore: owed %v, want 10.90.2.8 (its record changed at 50; saved revision %d)", owed, saved)
	}
}

// BenchmarkSaveConntrackRev: what a flush that saw a new revision adds to
// its pass (a temporary file written and renamed into place).
func BenchmarkSaveConntrackRev(b *testing.B) {
	path := filepath.Join(b.TempDir(), conntrackRevFile)
	ds := ctDatastore{cluster: 0xabc, epoch: 3}
	for i := range b.N {
		if err := saveConntrackRev(path, ds, int64(i+1)); err != nil {
			b.Fatal(err)
		}
	}
}
