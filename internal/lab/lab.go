// Package lab builds many "hosts" on one machine out of network namespaces:
// L2 fabrics (a Linux bridge in a namespace of its own), hosts plugged into
// them, routers between fabrics, a stand-in for the internet, and empty
// namespaces for workloads. The demo, the end-to-end tests and the benchmarks
// share it.
//
// Safety rules the package keeps:
//   - Every namespace name carries the lab's run id (prefix + 4 hex digits,
//     e.g. "cl3f2a-host1"), so labs run side by side and leftovers are
//     recognisable.
//   - No interface is ever created in the caller's (root) namespace: veth
//     pairs are created inside one lab namespace with the peer placed directly
//     in another, so a crash can never strand an interface on the real host.
//   - Close stops every process the lab started (by process group, SIGTERM
//     then SIGKILL) and deletes every namespace; Sweep removes what a crashed
//     run left behind, using a record of the creator's pid.
//
// Everything needs root.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces live, as `ip netns` keeps them.
const NetnsDir = "/run/netns"

// RecordDir holds one file per live lab, "<id>.pid", naming the creating
// process (pid and start time) so Sweep can tell live labs from leftovers.
const RecordDir = "/run/calico-lab"

// DefaultPrefix is used when New is given an empty prefix.
const DefaultPrefix = "cl"

// StopTimeout is how long Stop and Close wait after SIGTERM before SIGKILL.
var StopTimeout = 3 * time.Second

// ErrClosed is returned by lab methods called after Close.
var ErrClosed = errors.New("lab: closed")

var (
	prefixRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,5}$`)
	labelRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,39}$`)
)

// Lab is one run's set of namespaces, interfaces and processes. Its methods
// are safe for concurrent use.
type Lab struct {
	id     string
	prefix string
	logDir string

	mu        sync.Mutex
	closed    bool
	nss       []*Netns        // in creation order; deleted in reverse
	labels    map[string]bool // labels in use, to give a clear duplicate error
	procs     []*Proc
	listeners []net.Listener
	nprocs    int
	noIPv6    bool // DisableIPv6 was called
}

// New makes a lab whose namespace names all start with its run id: prefix
// (lower-case letters and digits, at most 6, default "cl") followed by 4
// random hex digits. It reserves the id by writing the creator record before
// anything else exists, so a concurrent Sweep never mistakes this lab's first
// namespaces for leftovers.
func New(prefix string) (*Lab, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab: prefix %q must be 1-6 lower-case letters or digits, starting with a letter", prefix)
	}
	if err := os.MkdirAll(RecordDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	start, err := procStartTime(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("lab: reading own start time: %w", err)
	}
	for range 50 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		id := prefix + hex.EncodeToString(b[:])
		if len(namespacesOf(id)) > 0 {
			continue // a leftover with this id exists; let Sweep deal with it
		}
		f, err := os.OpenFile(recordPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		_, werr := fmt.Fprintf(f, "%d %d\n", os.Getpid(), start)
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			os.Remove(recordPath(id))
			return nil, fmt.Errorf("lab: writing record: %w", err)
		}
		l := &Lab{id: id, prefix: prefix, labels: map[string]bool{}, logDir: logDirOf(id)}
		if err := os.MkdirAll(l.logDir, 0o755); err != nil {
			os.Remove(recordPath(id))
			return nil, fmt.Errorf("lab: %w", err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("lab: no free run id with prefix %q (run Sweep?)", prefix)
}

// ID is the run id carried by every namespace name of this lab.
func (l *Lab) ID() string { return l.id }

// LogDir is where the logs of processes started with Start go. Close removes
// it, so read what you need (Proc.Log) before closing.
func (l *Lab) LogDir() string { return l.logDir }

// Close stops every process started through the lab, closes listeners opened
// with Netns.Listen, and deletes every namespace the lab made (which deletes
// every interface in them, veth peers included). It keeps going after errors
// and returns them all. Calling it again is a no-op.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, listeners, nss := l.procs, l.listeners, l.nss
	l.mu.Unlock()

	var errs []error
	for _, ln := range listeners {
		ln.Close() // an already-closed listener is fine
	}
	// Stop processes in parallel so Close costs one StopTimeout at most.
	var wg sync.WaitGroup
	perr := make([]error, len(procs))
	for i, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perr[i] = p.Stop()
		}()
	}
	wg.Wait()
	errs = append(errs, perr...)

	// A process we did not start that still lives in a lab namespace would
	// keep it (and its interfaces) alive after the mount is gone; say so
	// rather than leaving an invisible leftover. We never kill it.
	inodes := map[uint64]string{}
	for _, n := range nss {
		var st unix.Stat_t
		if unix.Stat(n.Path, &st) == nil {
			inodes[st.Ino] = n.Name
		}
	}
	for ino, pids := range processesIn(inodes) {
		errs = append(errs, fmt.Errorf("lab: namespace %s still holds processes %v not started by the lab", inodes[ino], pids))
	}

	for i := len(nss) - 1; i >= 0; i-- {
		errs = append(errs, nss[i].release())
	}
	deleted := true
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(nss[i].Name); err != nil {
			errs = append(errs, err)
			deleted = false
		}
	}
	if err := os.RemoveAll(l.logDir); err != nil {
		errs = append(errs, err)
	}
	// Keep the record while namespaces remain: once this process is gone,
	// Sweep will find and remove them.
	if deleted {
		if err := os.Remove(recordPath(l.id)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sweep removes what labs left behind when their creating process died
// without Close: their namespaces, records and log directories. Labs whose
// creator is alive are never touched. With a prefix, only run ids starting
// with it are considered, and namespaces that look like that prefix's run
// ids but have no record at all are removed too (a live lab always writes its
// record before its first namespace). With an empty prefix, every recorded
// lab is considered.
func Sweep(prefix string) error {
	var errs []error
	records, _ := filepath.Glob(filepath.Join(RecordDir, "*.pid"))
	ours := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `[a-z0-9]*[0-9a-f]{4}$`)
	if prefix != "" {
		ours = regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `[0-9a-f]{4}$`)
	}
	for _, rec := range records {
		id := strings.TrimSuffix(filepath.Base(rec), ".pid")
		if !ours.MatchString(id) || creatorAlive(rec) {
			continue
		}
		errs = append(errs, sweepID(id))
	}
	if prefix != "" {
		// Namespaces are listed before records are checked: a lab created in
		// between has its record written before its namespaces, so it is seen.
		idRE := regexp.MustCompile(`^(` + regexp.QuoteMeta(prefix) + `[0-9a-f]{4})-`)
		seen := map[string]bool{}
		for _, name := range listNamespaces() {
			m := idRE.FindStringSubmatch(name)
			if m == nil || seen[m[1]] {
				continue
			}
			seen[m[1]] = true
			if _, err := os.Stat(recordPath(m[1])); errors.Is(err, os.ErrNotExist) {
				errs = append(errs, sweepID(m[1]))
			}
		}
	}
	return errors.Join(errs...)
}

func sweepID(id string) error {
	var errs []error
	names := namespacesOf(id)
	// Processes of the dead lab should have died with it (Pdeathsig); one
	// that did not would keep its namespace alive unseen, so report it.
	inodes := map[uint64]string{}
	for _, name := range names {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(NetnsDir, name), &st) == nil {
			inodes[st.Ino] = name
		}
	}
	for ino, pids := range processesIn(inodes) {
		errs = append(errs, fmt.Errorf("namespace %s still holds processes %v", inodes[ino], pids))
	}
	for _, name := range names {
		errs = append(errs, deleteNamespace(name))
	}
	errs = append(errs, os.RemoveAll(logDirOf(id)))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: sweeping %s: %w", id, err)
	}
	if err := os.Remove(recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func recordPath(id string) string { return filepath.Join(RecordDir, id+".pid") }
func logDirOf(id string) string   { return filepath.Join(os.TempDir(), "calico-lab-"+id) }

// InUse reports whether lab id exists and the process that made it still
// runs, so a sweep by another process must leave it alone.
func InUse(id string) bool {
	rec := recordPath(id)
	if _, err := os.Stat(rec); err != nil {
		return false
	}
	return creatorAlive(rec)
}

// creatorAlive reports whether the process named in a record still runs.
// The start time guards against the pid having been reused since.
func creatorAlive(rec string) bool {
	b, err := os.ReadFile(rec)
	if err != nil {
		// Unreadable or just removed: treat as alive, the safe side.
		return true
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil || pid <= 0 {
		// A record being written right now is empty for an instant; only a
		// record that stays malformed for a while is a leftover.
		if fi, err := os.Stat(rec); err == nil && time.Since(fi.ModTime()) < time.Minute {
			return true
		}
		return false
	}
	got, err := procStartTime(pid)
	return err == nil && got == start
}

// ProcStat returns the fields of /proc/<pid>/stat from field 3 (state) on:
// field N of proc(5) is element N-3. The command name (field 2) is skipped
// whole, since it may hold spaces and parentheses.
func ProcStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return f, nil
}

// procStartTime is field 22 of /proc/<pid>/stat: start time in clock ticks
// since boot, unique per pid incarnation.
func procStartTime(pid int) (uint64, error) {
	f, err := ProcStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func listNamespaces() []string {
	ents, _ := os.ReadDir(NetnsDir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func namespacesOf(id string) []string {
	var out []string
	for _, n := range listNamespaces() {
		if strings.HasPrefix(n, id+"-") {
			out = append(out, n)
		}
	}
	return out
}

// deleteNamespace does what `ip netns del` does: detach the bind mount that
// keeps the namespace alive and remove the file. The kernel frees the
// namespace, and every interface in it, once nothing else refers to it.
func deleteNamespace(name string) error {
	p := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("lab: unmounting %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab: removing %s: %w", p, err)
	}
	return nil
}

// processesIn maps namespace inode -> pids of other processes whose network
// namespace is that one.
func processesIn(inodes map[uint64]string) map[uint64][]int {
	out := map[uint64][]int{}
	if len(inodes) == 0 {
		return out
	}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
			continue
		}
		if _, ok := inodes[st.Ino]; ok {
			out[st.Ino] = append(out[st.Ino], pid)
		}
	}
	return out
}

// isGone reports whether an error from kill means the target no longer exists.
func isGone(err error) bool { return errors.Is(err, syscall.ESRCH) }
