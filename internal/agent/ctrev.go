package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// conntrackRevFile, in the state directory, holds the datastore revision up
// to which this host's conntrack entries of changed endpoint records were
// flushed (flushConntrack), and which datastore that revision is of.
const conntrackRevFile = "conntrack-revision"

// ctDatastore tells datastores apart: etcd's cluster ID, and the creation
// revision of this node's record (agent.dsEpoch).
type ctDatastore struct {
	cluster uint64
	epoch   int64
}

// formatConntrackRev is the file's one line.
func formatConntrackRev(ds ctDatastore, rev int64) string {
	return fmt.Sprintf("cluster=%x epoch=%d revision=%d\n", ds.cluster, ds.epoch, rev)
}

// loadConntrackRev reads the saved revision. why is set when there is none
// to trust: no file (first start), unreadable or corrupt (a crash while
// writing cannot leave one: it is renamed into place, but a disk can), of
// another datastore (its revisions count from elsewhere), or ahead of this
// datastore's revision now (restored from a backup: records made since
// may carry revisions below it). The caller then flushes more, never
// less; nothing here is fatal.
func loadConntrackRev(path string, ds ctDatastore, now int64) (rev int64, why string) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, "none saved (first start)"
	}
	if err != nil {
		return 0, "unreadable: " + err.Error()
	}
	var d ctDatastore
	var r int64
	if _, err := fmt.Sscanf(string(b), "cluster=%x epoch=%d revision=%d\n", &d.cluster, &d.epoch, &r); err != nil || r <= 0 || formatConntrackRev(d, r) != string(b) {
		return 0, fmt.Sprintf("corrupt (%q)", truncate(string(b), 64))
	}
	if d != ds {
		return 0, fmt.Sprintf("saved for another datastore (cluster %x, node record created at %d; now %x, %d)", d.cluster, d.epoch, ds.cluster, ds.epoch)
	}
	if r > now {
		return 0, fmt.Sprintf("saved revision %d is ahead of the datastore's %d", r, now)
	}
	return r, ""
}

// saveConntrackRev writes the file atomically: a temporary file renamed
// into place, so a reader sees the old line or the new one. No fsync: a
// crash can at worst lose the newest line or leave an empty file, which
// is an older revision or none, and only costs the next start more
// flushes.
func saveConntrackRev(path string, ds ctDatastore, rev int64) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, conntrackRevFile+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.WriteString(formatConntrackRev(ds, rev))
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp, 0o644)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
