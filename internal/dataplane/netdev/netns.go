package netdev

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Option adjusts where and how an entry point programs the kernel.
type Option func(*options)

type options struct {
	// netns is the path of the namespace to program; "" is the caller's own.
	netns string
	// proto is the route protocol a RouteSyncer owns.
	proto netlink.RouteProtocol
}

// InNetns makes an entry point program the network namespace at path
// (/var/run/netns/NAME or /proc/PID/ns/net) instead of the caller's own. The
// node agent runs inside its host's namespace and needs no option; tests and
// the lab drive several hosts from one process and pass it.
func InNetns(path string) Option {
	return func(o *options) { o.netns = path }
}

func buildOptions(opts []Option) options {
	o := options{proto: RouteProtocol}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// netlinkTimeout bounds every netlink round trip, so a wedged kernel or a
// lost reply turns into an error instead of a hung agent.
const netlinkTimeout = 10 * time.Second

// openHandle returns a route-netlink handle in the namespace at path ("" =
// the calling thread's namespace). Only NETLINK_ROUTE is opened: the default
// set also opens XFRM and netfilter sockets that route work never uses.
func openHandle(path string) (*netlink.Handle, error) {
	return openHandleFamily(path, unix.NETLINK_ROUTE)
}

// openHandleFamily is openHandle for one netlink family (NETLINK_NETFILTER
// for conntrack).
func openHandleFamily(path string, family int) (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if path == "" {
		h, err = netlink.NewHandle(family)
	} else {
		ns, nerr := netns.GetFromPath(path)
		if nerr != nil {
			return nil, fmt.Errorf("open netns %s: %w", path, nerr)
		}
		defer ns.Close()
		h, err = netlink.NewHandleAt(ns, family)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink socket in netns %s: %w", nsName(path), err)
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink socket timeout: %w", err)
	}
	return h, nil
}

// openNetns returns a handle (file descriptor) on the namespace at path, or
// on the calling thread's own namespace for "".
func openNetns(path string) (netns.NsHandle, error) {
	if path == "" {
		ns, err := netns.Get()
		if err != nil {
			return ns, fmt.Errorf("open current netns: %w", err)
		}
		return ns, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, fmt.Errorf("open netns %s: %w", path, err)
	}
	return ns, nil
}

func nsName(path string) string {
	if path == "" {
		return "(current)"
	}
	return path
}

// runInNetns calls fn with the OS thread in the namespace at path. For ""
// it calls fn directly: the caller is already where it wants to be (and if it
// locked its own thread into some namespace, fn runs on that same thread).
//
// Otherwise fn runs on a fresh goroutine locked to its thread. If the thread
// cannot be moved back, the goroutine exits still locked, and the Go runtime
// then destroys the thread rather than reuse it in the wrong namespace.
func runInNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()

	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			done <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", path, err))
			return // still locked: the runtime discards this thread
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// sysctl is one /proc/sys setting. Optional settings are skipped when their
// file does not exist, which is how a kernel (or namespace) without IPv6
// shows itself.
type sysctl struct {
	key      []string // path elements under /proc/sys; interface names may hold dots
	value    string
	optional bool
}

func sysctlPath(key []string) string {
	return filepath.Join(append([]string{"/proc/sys"}, key...)...)
}

// writeSysctls applies settings in the namespace at path. /proc/sys/net
// shows the namespace of the thread that opens it, which is why this goes
// through runInNetns instead of a netlink handle. A missing file is an
// error unless the setting is optional.
func writeSysctls(path string, settings []sysctl) error {
	_, err := setSysctls(path, settings, false, false)
	return err
}

// writeHostSysctls is writeSysctls for a host's namespace, which settings
// are written in again and again (one host side per new workload): it
// keeps that namespace's /proc/sys/net open across calls (procSysNet).
func writeHostSysctls(path string, settings []sysctl) error {
	_, err := setSysctls(path, settings, false, true)
	return err
}

// setSysctls reads each setting and writes those whose value differs,
// saying which it wrote; missingOK skips every missing file, not only
// optional ones. Reading first matters beyond saving a write: some writes
// act even when the value stays (addr_gen_mode), and writing an IPv4 or
// IPv6 forwarding setting takes the kernel's global RTNL lock with a
// trylock that restarts the system call until it gets it, so each of 20
// workloads wired at once spun on the lock the others' veth creation held
// (BenchmarkAddWorkload: a burst of 20 took 82-108 ms with the writes,
// 20-51 ms without any). A new host side inherits forwarding=1 from the
// namespace's default once forwarding is on, so that write is skipped.
// keep opens the namespace's directories relative to its /proc/sys/net
// kept open across calls (procSysNet), for a host's namespace.
func setSysctls(path string, settings []sysctl, missingOK, keep bool) (fixed []string, err error) {
	if len(settings) == 0 {
		return nil, nil
	}
	err = runInNetns(path, func() error {
		dirs := sysctlDirs{dirs: map[string]int{}}
		if keep {
			if d, id, err := procSysNet.acquire(); err == nil {
				dirs.kept = d
				defer func() {
					if dirs.stale {
						procSysNet.drop(id, d)
					}
					procSysNet.release(d)
				}()
			}
		}
		defer dirs.close()
		var errs []error
		for _, s := range settings {
			p := sysctlPath(s.key)
			have, err := dirs.read(s.key)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && (missingOK || s.optional) {
					continue
				}
				errs = append(errs, fmt.Errorf("sysctl %s in netns %s: %w", p, nsName(path), err))
				continue
			}
			if strings.TrimSpace(string(have)) == s.value {
				continue
			}
			if err := dirs.write(s.key, s.value); err != nil {
				errs = append(errs, fmt.Errorf("sysctl %s=%s in netns %s: %w", p, s.value, nsName(path), err))
				continue
			}
			fixed = append(fixed, fmt.Sprintf("%s %s -> %s", strings.Join(s.key[1:], "."), strings.TrimSpace(string(have)), s.value))
		}
		return errors.Join(errs...)
	})
	return fixed, err
}

// sysctlDirs opens each setting relative to the directory holding its
// interface's directory (/proc/sys/net/ipv4/conf for
// net/ipv4/conf/IFACE/proxy_arp), opened once per call. The kernel's dentry
// cache holds each of those directories once for every network namespace
// on the machine under one name, and a lookup by full path compares against
// each of them: proc_sys_compare was 29% of the agent's CPU at 1000
// workloads, each in its own namespace (perf), so a read-back of all 7000
// settings was quadratic in workloads. Relative to open directories only
// the interface's own components are looked up per setting; for a host's
// namespace the directories are kept across calls (procSysNet). It is used
// on one thread, inside runInNetns: /proc/sys shows the namespace of the
// thread that looks a name up.
type sysctlDirs struct {
	// kept are the namespace's directories kept across calls
	// (procSysNet), used instead of dirs; nil: none.
	kept *netDir
	// stale says kept are of a namespace that is gone (a setting missing
	// under them was found by full path): they are given up.
	stale bool
	// dirs are the directories opened in this call, by full path.
	dirs map[string]int
}

// open returns a raw descriptor, not an *os.File: os.NewFile asks the
// kernel whether the descriptor is non-blocking, a system call more per
// setting, and a read-back of all 7000 settings at 1000 workloads is
// little else than these system calls.
func (d *sysctlDirs) open(key []string, flags int) (int, error) {
	split := max(len(key)-2, 1)
	dir, rel := sysctlPath(key[:split]), filepath.Join(key[split:]...)
	if d.kept != nil {
		if dfd, err := procSysNet.dir(d.kept, dir); err == nil {
			f, err := unix.Openat(dfd, rel, flags|unix.O_CLOEXEC, 0)
			if err != unix.ENOENT {
				if err != nil {
					return -1, &fs.PathError{Op: "open", Path: sysctlPath(key), Err: err}
				}
				return f, nil
			}
		}
		// Missing under the kept directory: missing in this namespace, or
		// the directory is of a namespace that is gone (whose inode number
		// this one has now). Found by full path, it is the latter.
		f, err := d.openInCall(dir, rel, flags)
		if err == nil {
			d.stale, d.kept = true, nil
		}
		return f, err
	}
	return d.openInCall(dir, rel, flags)
}

// openInCall opens rel under dir, opening dir once per call.
func (d *sysctlDirs) openInCall(dir, rel string, flags int) (int, error) {
	fd, ok := d.dirs[dir]
	if !ok {
		var err error
		if fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			return -1, &fs.PathError{Op: "open", Path: dir, Err: err}
		}
		d.dirs[dir] = fd
	}
	f, err := unix.Openat(fd, rel, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: filepath.Join(dir, rel), Err: err}
	}
	return f, nil
}

// sysctlReadSize is more than any setting this package reads holds. A
// /proc/sys handler returns the whole value to a read that has room for
// it, so a short read is the end: no second read to see end of file.
const sysctlReadSize = 128

func (d *sysctlDirs) read(key []string) ([]byte, error) {
	f, err := d.open(key, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(f)
	var out []byte
	buf := make([]byte, sysctlReadSize)
	for {
		n, err := unix.Read(f, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: sysctlPath(key), Err: err}
		}
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out, nil
		}
	}
}

func (d *sysctlDirs) write(key []string, value string) error {
	f, err := d.open(key, unix.O_WRONLY)
	if err != nil {
		return err
	}
	_, err = unix.Write(f, []byte(value))
	if cerr := unix.Close(f); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "write", Path: sysctlPath(key), Err: err}
	}
	return nil
}

func (d *sysctlDirs) close() {
	for _, fd := range d.dirs {
		unix.Close(fd)
	}
}

// maxDumpRetries bounds retries of dumps the kernel reports as interrupted
// (the table changed while it was being read). Such a dump may be missing
// entries, and acting on it could delete routes that exist, so it is redone.
const maxDumpRetries = 10

func retryDump[T any](what string, f func() (T, error)) (T, error) {
	for i := 0; ; i++ {
		v, err := f()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i >= maxDumpRetries {
			var zero T
			return zero, fmt.Errorf("dump %s: %w", what, err)
		}
	}
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}
