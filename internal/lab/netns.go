package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is a named network namespace made by the lab, as `ip netns add`
// makes them: Path is /run/netns/<Name>, so `ip netns exec <Name> ...` works
// from a shell too.
type Netns struct {
	Name  string // full namespace name, "<lab id>-<label>"
	Path  string // bind mount keeping the namespace alive
	Label string // the short name the caller gave

	lab *Lab
	// mu guards fd and nl against Close: a Do racing with Close must not
	// setns to an fd number that was closed and reused for something else.
	mu       sync.RWMutex
	fd       netns.NsHandle  // open for the lab's lifetime: setns and veth peers
	nl       *netlink.Handle // netlink socket inside the namespace
	released bool            // set by Close; fd and nl are gone for good
}

func (n *Netns) String() string { return n.Name }

// AddNetns makes an empty namespace named "<id>-<label>" with its loopback
// up (as container runtimes leave it).
func (l *Lab) AddNetns(label string) (*Netns, error) {
	if !labelRE.MatchString(label) {
		return nil, fmt.Errorf("lab: name %q: use letters, digits, '-', '_' or '.', at most 40", label)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if l.labels[label] {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: name %q is already used in lab %s", label, l.id)
	}
	l.labels[label] = true
	l.mu.Unlock()

	n := &Netns{Name: l.id + "-" + label, Label: label, lab: l, fd: -1}
	n.Path = filepath.Join(NetnsDir, n.Name)
	// `ip netns add` rather than our own unshare+bind mount: it also makes
	// /run/netns a shared mount, so namespaces added later are visible to
	// processes already running under `ip netns exec`.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := runCmd(ctx, "ip", "netns", "add", n.Name); err != nil {
		l.mu.Lock()
		delete(l.labels, label)
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: ip netns add %s: %v: %s", n.Name, err, out)
	}
	// Track it before anything else can fail so Close removes it.
	l.mu.Lock()
	l.nss = append(l.nss, n)
	closed := l.closed
	l.mu.Unlock()
	if closed {
		// Close ran concurrently and may have missed this one.
		deleteNamespace(n.Name)
		return nil, ErrClosed
	}
	fd, err := netns.GetFromPath(n.Path)
	if err != nil {
		return nil, fmt.Errorf("lab: opening %s: %w", n.Path, err)
	}
	nl, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("lab: netlink in %s: %w", n.Name, err)
	}
	n.mu.Lock()
	if n.released {
		// Close got here first; holding these would keep the namespace alive.
		n.mu.Unlock()
		nl.Close()
		fd.Close()
		return nil, ErrClosed
	}
	n.fd, n.nl = fd, nl
	n.mu.Unlock()
	if err := n.linkUp("lo"); err != nil {
		return nil, err
	}
	// Read after fd and nl are set: DisableIPv6 sets the flag before it
	// lists the namespaces that are ready, so one of the two reaches n.
	l.mu.Lock()
	noIPv6 := l.noIPv6
	l.mu.Unlock()
	if noIPv6 {
		if err := n.disableIPv6(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// DisableIPv6 turns IPv6 off in every namespace of the lab, now and made
// later, before their interfaces appear where it can. For labs of many
// namespaces that use IPv4 only: each interface with IPv6 on joins
// multicast groups (MLD reports, router and DAD solicitations) and so
// holds IPv6 neighbour entries, and the kernel keeps one IPv6 neighbour
// table for all namespaces of the machine (net.ipv6.neigh.default.
// gc_thresh3, 1024 by default): a 50-host lab held about 400 of them,
// enough with other labs running to overflow it ("ndisc_cache: neighbor
// table overflow") for everyone.
func (l *Lab) DisableIPv6() error {
	l.mu.Lock()
	l.noIPv6 = true
	nss := slices.Clone(l.nss)
	l.mu.Unlock()
	for _, n := range nss {
		if n.Netlink() == nil {
			continue // still being made, or closed: AddNetns sees the flag
		}
		if err := n.disableIPv6(); err != nil {
			return err
		}
	}
	return nil
}

// disableIPv6 turns IPv6 off on the namespace's interfaces and on those it
// gets later (default: veths made in or moved into it).
func (n *Netns) disableIPv6() error {
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := n.SetSysctl(k, "1"); err != nil {
			return err
		}
	}
	return nil
}

// release closes the lab's own references to the namespace, so deleting the
// mount really frees it.
func (n *Netns) release() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.released = true
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.fd >= 0 {
		err := n.fd.Close()
		n.fd = -1
		return err
	}
	return nil
}

// Netlink returns a netlink handle bound to the namespace, for callers that
// want to inspect it (links, routes, neighbours). Lab.Close closes it; after
// that, Netlink returns nil.
func (n *Netns) Netlink() *netlink.Handle {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.nl
}

// withNL runs fn with the namespace's netlink handle, holding off Close so
// the handle's socket cannot be closed (and its fd number reused) midway.
func (n *Netns) withNL(fn func(h *netlink.Handle) error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.nl == nil {
		return fmt.Errorf("lab: namespace %s: %w", n.Name, ErrClosed)
	}
	return fn(n.nl)
}

// addVeth creates a veth pair: aName in a, bName in b. It is created inside a
// with the peer placed straight into b, so it never exists, even for an
// instant, in the caller's namespace.
func addVeth(a *Netns, aName string, b *Netns, bName string) error {
	// Close holds at most one namespace lock at a time, so taking two read
	// locks here cannot deadlock with it.
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.fd < 0 {
		return fmt.Errorf("lab: namespace %s: %w", b.Name, ErrClosed)
	}
	err := a.withNL(func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: aName},
			PeerName:      bName,
			PeerNamespace: netlink.NsFd(int(b.fd)),
		})
	})
	if err != nil {
		return fmt.Errorf("lab: veth %s (%s) to %s (%s): %w", aName, a.Name, bName, b.Name, err)
	}
	return nil
}

// Do runs fn with the calling thread in the namespace. fn runs on a fresh
// goroutine locked to its OS thread; if switching back fails, that thread is
// thrown away instead of being returned to the scheduler in the wrong
// namespace. Goroutines that fn starts do NOT run in the namespace, and the
// mount namespace is unchanged (/sys/class/net still shows the caller's
// view; use netlink). Sockets created inside stay in the namespace after Do
// returns. A panic in fn is re-raised in the caller.
func (n *Netns) Do(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("lab: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		// Once entered, the thread itself keeps the namespace alive, so
		// the lock is needed only around setns.
		n.mu.RLock()
		if n.fd < 0 {
			err = ErrClosed
		} else {
			err = netns.Set(n.fd)
		}
		n.mu.RUnlock()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("lab: entering %s: %w", n.Name, err)}
			return
		}
		var res result
		func() {
			defer func() { res.panic = recover() }()
			res.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it exits with this goroutine.
			if res.err == nil {
				res.err = fmt.Errorf("lab: leaving %s: %w", n.Name, err)
			}
		} else {
			runtime.UnlockOSThread()
		}
		ch <- res
	}()
	res := <-ch
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}

// Run runs argv inside the namespace (via `ip netns exec`) and returns its
// combined output. The error names the command and includes the output.
// Cancelling ctx kills the command's whole process group.
func (n *Netns) Run(ctx context.Context, argv ...string) (string, error) {
	out, _, err := n.run(ctx, argv...)
	return out, err
}

// run is Run returning also the exit state, whose rusage is argv's CPU
// time (`ip netns exec` execs argv in its own process).
func (n *Netns) run(ctx context.Context, argv ...string) (string, *os.ProcessState, error) {
	if len(argv) == 0 {
		return "", nil, errors.New("lab: Run: empty command")
	}
	out, st, err := runCmdState(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
	if err != nil {
		return out, st, fmt.Errorf("%s in %s: %w: %s", strings.Join(argv, " "), n.Name, err, strings.TrimSpace(out))
	}
	return out, st, nil
}

// runCmd runs a command in its own process group, killed as a group when ctx
// ends and when this process dies.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	out, _, err := runCmdState(ctx, name, args...)
	return out, err
}

// runCmdState is runCmd returning also the exit state (nil if it never ran).
func runCmdState(ctx context.Context, name string, args ...string) (string, *os.ProcessState, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	cmd.SysProcAttr = procAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	if err := startUnlocked(cmd); err != nil {
		return "", nil, err
	}
	err := cmd.Wait()
	return buf.String(), cmd.ProcessState, err
}

func procAttr() *syscall.SysProcAttr {
	// Pdeathsig: if the test or demo process is killed outright, what it
	// started dies with it instead of pinning lab namespaces.
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// startUnlocked starts cmd from a fresh goroutine. Pdeathsig fires when the
// *thread* that forked exits; a fresh goroutine is never on a thread locked
// by someone else's LockOSThread, and Go only retires such locked threads.
func startUnlocked(cmd *exec.Cmd) error {
	ch := make(chan error, 1)
	go func() { ch <- cmd.Start() }()
	return <-ch
}

// Proc is a background process started in a lab namespace. It runs in its own
// process group, and Stop/Close signal that group, so helpers it spawns go too.
type Proc struct {
	Pid     int
	Argv    []string
	LogPath string // stdout and stderr, unless the caller set their own

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start runs argv in the background inside the namespace with output to a
// log file in the lab's log directory. The lab stops it on Close.
func (n *Netns) Start(argv ...string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("lab: Start: empty command")
	}
	return n.StartCmd(exec.Command(argv[0], argv[1:]...))
}

// StartCmd is Start for a prepared command, to set Env, Dir, Stdin or
// output. Its Path and Args are wrapped in `ip netns exec`; SysProcAttr is
// replaced (own process group, killed if this process dies).
func (n *Netns) StartCmd(cmd *exec.Cmd) (*Proc, error) {
	l := n.lab
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.nprocs++
	seq := l.nprocs
	l.mu.Unlock()

	argv := cmd.Args
	if len(argv) == 0 {
		return nil, errors.New("lab: StartCmd: empty command")
	}
	if cmd.Err != nil {
		// exec.Command could not find argv[0]; `ip netns exec` would not either.
		return nil, fmt.Errorf("lab: starting %s in %s: %w", strings.Join(argv, " "), n.Name, cmd.Err)
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return nil, Require("ip")
	}
	p := &Proc{Argv: argv, done: make(chan struct{})}
	var logf *os.File
	if cmd.Stdout == nil || cmd.Stderr == nil {
		p.LogPath = filepath.Join(l.logDir, fmt.Sprintf("%s-%s-%d.log", n.Label, filepath.Base(argv[0]), seq))
		logf, err = os.OpenFile(p.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		defer logf.Close() // the child has its own copy
		if cmd.Stdout == nil {
			cmd.Stdout = logf
		}
		if cmd.Stderr == nil {
			cmd.Stderr = logf
		}
	}
	// Hand ip the program as exec.Command resolved it.
	cmd.Args = append([]string{"ip", "netns", "exec", n.Name, cmd.Path}, argv[1:]...)
	cmd.Path = ipPath
	cmd.SysProcAttr = procAttr()

	// Register before starting so a concurrent Close cannot miss it.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if err := startUnlocked(cmd); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab: starting %s in %s: %w", strings.Join(argv, " "), n.Name, err)
	}
	p.Pid = cmd.Process.Pid
	p.cmd = cmd
	l.procs = append(l.procs, p)
	l.mu.Unlock()

	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait waits for the process to exit and returns its exit status.
func (p *Proc) Wait() error {
	<-p.done
	return p.waitErr
}

// CPU is the user plus system time the process used (with its waited-for
// children); zero until it has exited.
func (p *Proc) CPU() time.Duration {
	if !p.Exited() || p.cmd.ProcessState == nil {
		return 0
	}
	return p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log returns what the process wrote to its log file so far.
func (p *Proc) Log() string {
	if p.LogPath == "" {
		return ""
	}
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Stop sends SIGTERM to the process group, waits up to StopTimeout, then
// sends SIGKILL. Members of the group still alive after the leader exited
// are killed too. It returns nil once everything is gone, whatever the exit
// status; safe to call more than once.
func (p *Proc) Stop() error {
	p.stopOnce.Do(func() {
		pg := -p.Pid
		if !p.Exited() {
			if err := syscall.Kill(pg, syscall.SIGTERM); err != nil && !isGone(err) {
				p.stopErr = fmt.Errorf("lab: SIGTERM %d: %w", p.Pid, err)
			}
			select {
			case <-p.done:
			case <-time.After(StopTimeout):
			}
		}
		// The group id stays reserved while any member lives, so this
		// reaches only processes we started.
		if err := syscall.Kill(pg, syscall.SIGKILL); err != nil && !isGone(err) && p.stopErr == nil {
			p.stopErr = fmt.Errorf("lab: SIGKILL %d: %w", p.Pid, err)
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.stopErr = errors.Join(p.stopErr, fmt.Errorf("lab: process %d (%s) did not exit after SIGKILL", p.Pid, strings.Join(p.Argv, " ")))
		}
	})
	return p.stopErr
}

// Listen opens a listener whose socket lives in the namespace (see Do). The
// lab closes it on Close.
func (n *Netns) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, err
	}
	n.lab.mu.Lock()
	n.lab.listeners = append(n.lab.listeners, ln)
	n.lab.mu.Unlock()
	return ln, nil
}

// SetSysctl sets a sysctl inside the namespace; key is dotted or slashed
// ("net.ipv4.ip_forward" or "net/ipv4/ip_forward").
func (n *Netns) SetSysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if strings.Contains(key, "/") {
		p = filepath.Join("/proc/sys", key)
	}
	// /proc/sys/net resolves against the opening thread's namespace, so the
	// open must happen inside Do.
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("lab: sysctl %s=%s in %s: %w", key, value, n.Name, err)
		}
		return nil
	})
}

// Sysctl reads a sysctl inside the namespace.
func (n *Netns) Sysctl(key string) (string, error) {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if strings.Contains(key, "/") {
		p = filepath.Join("/proc/sys", key)
	}
	var v string
	err := n.Do(func() error {
		b, err := os.ReadFile(p)
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

// AddAddr adds an address ("10.0.0.5/24", "fd00::5/64") to an interface in
// the namespace. IPv6 addresses skip duplicate address detection, so they
// are usable at once.
func (n *Netns) AddAddr(dev, prefix string) error {
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil {
		return fmt.Errorf("lab: address %q: %w", prefix, err)
	}
	a := &netlink.Addr{IPNet: prefixToIPNet(pfx)}
	if pfx.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return n.withNL(func(h *netlink.Handle) error {
		link, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", dev, n.Name, err)
		}
		if err := h.AddrAdd(link, a); err != nil {
			return fmt.Errorf("lab: adding %s to %s in %s: %w", prefix, dev, n.Name, err)
		}
		return nil
	})
}

// AddRoute adds a route to dst ("default", "10.1.0.0/24", "fd00:1::/64") via
// a gateway address reachable in the namespace.
func (n *Netns) AddRoute(dst, via string) error {
	gw, err := netip.ParseAddr(via)
	if err != nil {
		return fmt.Errorf("lab: gateway %q: %w", via, err)
	}
	r := &netlink.Route{Gw: gw.AsSlice()}
	if dst != "default" {
		pfx, err := netip.ParsePrefix(dst)
		if err != nil {
			return fmt.Errorf("lab: route destination %q: %w", dst, err)
		}
		r.Dst = prefixToIPNet(pfx.Masked())
	} else if gw.Is4() {
		r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	} else {
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	return n.withNL(func(h *netlink.Handle) error {
		if err := h.RouteAdd(r); err != nil {
			return fmt.Errorf("lab: route %s via %s in %s: %w", dst, via, n.Name, err)
		}
		return nil
	})
}

func (n *Netns) linkUp(dev string) error {
	return n.withNL(func(h *netlink.Handle) error {
		link, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("lab: %s in %s: %w", dev, n.Name, err)
		}
		if err := h.LinkSetUp(link); err != nil {
			return fmt.Errorf("lab: setting %s up in %s: %w", dev, n.Name, err)
		}
		return nil
	})
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
