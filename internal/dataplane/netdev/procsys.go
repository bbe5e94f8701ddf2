package netdev

import (
	"io/fs"
	"sync"

	"golang.org/x/sys/unix"
)

// procSysNet keeps, for each network namespace host-side settings are read
// or written in, the directories holding its interfaces' settings
// (/proc/sys/net/ipv4/conf, ipv4/neigh, ipv6/conf) open across calls.
// Opening one by path looks "ipv4" or "ipv6" up under /proc/sys/net, where
// the dentry cache holds one such entry per network namespace that has used
// its settings, all under one name in one hash chain, newest first;
// proc_sys_compare checks each against the caller's namespace under the
// sysctl lock. Every workload's namespace uses ipv6 (its accept_dad), so a
// host that started before its workloads walks past all of theirs: at 1000
// workloads one open of ipv6/conf took 120 us from the lab host's
// namespace (500 us from a new one), the new host side's settings 1.5-2 ms
// in the policy bench against 0.25 ms at 10, and `perf record -a` showed
// proc_sys_compare under sysctlDirs.open in calico-node's read-back of the
// new interface and in the call that makes the veth
// (BenchmarkHostSysctlsNextTo: 164-242 us against 55-65 us at 10, kept
// 63-80 us). Below an open directory every name is the namespace's own. An
// open directory keeps showing the namespace it was opened in, whichever
// namespace the thread using it is in: they are kept by namespace, and used
// only by a thread in it.
var procSysNet = netDirCache{m: map[nsID]*netDir{}}

// nsID names a network namespace while it exists: its nsfs device and
// inode. A namespace that is gone frees its inode number for a new one;
// the directories kept for the old one then hold nothing (the kernel
// removed its settings), which is how sysctlDirs.open notices.
type nsID struct{ dev, ino uint64 }

// netDir is one namespace's kept directories, by full path. They are
// closed once it is dropped and no call still uses it.
type netDir struct {
	dirs    map[string]int
	refs    int
	dropped bool
	used    uint64 // the cache's clock at its last acquire
}

type netDirCache struct {
	mu    sync.Mutex
	m     map[nsID]*netDir
	clock uint64
}

// maxNetDirs bounds the namespaces kept: one per host a process programs
// (the agent: its own; a lab: each host's).
const maxNetDirs = 16

// acquire returns the kept directories of the calling thread's network
// namespace; release gives them back.
func (c *netDirCache) acquire() (*netDir, nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, nsID{}, err
	}
	id := nsID{dev: st.Dev, ino: st.Ino}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[id]
	if !ok {
		if len(c.m) >= maxNetDirs {
			// The least recently used goes: a process that programs a
			// few hosts' namespaces again and again keeps them all.
			var lk nsID
			var lru *netDir
			for k, old := range c.m {
				if lru == nil || old.used < lru.used {
					lk, lru = k, old
				}
			}
			c.dropLocked(lk, lru)
		}
		d = &netDir{dirs: map[string]int{}}
		c.m[id] = d
	}
	c.clock++
	d.used = c.clock
	d.refs++
	return d, id, nil
}

// dir returns d's directory at path, opening it (from the calling thread,
// which is in d's namespace) on first use.
func (c *netDirCache) dir(d *netDir, path string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fd, ok := d.dirs[path]; ok {
		return fd, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	d.dirs[path] = fd
	return fd, nil
}

func (c *netDirCache) release(d *netDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.refs--
	if d.dropped && d.refs == 0 {
		d.close()
	}
}

// drop gives up d, kept for id: the next acquire starts afresh.
func (c *netDirCache) drop(id nsID, d *netDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(id, d)
}

func (c *netDirCache) dropLocked(id nsID, d *netDir) {
	if c.m[id] == d {
		delete(c.m, id)
	}
	if !d.dropped {
		d.dropped = true
		if d.refs == 0 {
			d.close()
		}
	}
}

func (d *netDir) close() {
	for _, fd := range d.dirs {
		unix.Close(fd)
	}
	d.dirs = nil
}
