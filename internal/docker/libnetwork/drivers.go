package libnetwork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/docker"
)

// DefaultPluginDir is where the engine discovers plugin sockets.
const DefaultPluginDir = "/run/docker/plugins"

// callTimeout bounds one engine call: the engine waits on us while a user
// waits on it, so a dead datastore must turn into an error, not a hang.
const callTimeout = 15 * time.Second

// Drivers holds what both drivers share. Engine calls are serialised: they
// are rare (one per container start or stop) and each is a few
// read-modify-write steps on records that several calls touch.
type Drivers struct {
	// DriverName is the network driver's name in the engine: the socket's
	// name for the legacy plugin, the plugin's name (calico:latest) for a
	// managed one.
	DriverName string

	c      *client.Client
	node   string
	engine Engine
	log    *slog.Logger
	mu     sync.Mutex
	// life ends at Close; learning counts the learnContainer runs.
	life     context.Context
	stop     context.CancelFunc
	learning sync.WaitGroup
	// pending are removed networks' pools that stay for other users
	// (pending.go), under their own lock: the status reads them.
	pmu     sync.Mutex
	pending map[string]pendingPool
}

// Engine is what the drivers ask the engine: a network's name, labels and
// endpoints, a container's name and labels, and the engine's process (for
// its network namespace).
type Engine interface {
	NetworkInspect(ctx context.Context, id string) (docker.Network, error)
	DriverEndpoints(ctx context.Context, driver string) (networks, endpoints map[string]bool, err error)
	Lookup(ctx context.Context, nameOrID string) (docker.Container, error)
	RunLabels(ctx context.Context, ctr docker.Container) (map[string]string, error)
	Pid() (int, error)
}

// New makes the drivers for node, asking engine for network names and its
// own network namespace. Close them when done.
func New(c *client.Client, node string, engine Engine, log *slog.Logger) *Drivers {
	life, stop := context.WithCancel(context.Background())
	return &Drivers{DriverName: NetworkDriverName, c: c, node: node, engine: engine, log: log.With("component", "libnetwork"), life: life, stop: stop}
}

// call starts one engine call: it takes the drivers' lock and gives the
// call its deadline; done undoes both.
func (d *Drivers) call() (ctx context.Context, done func()) {
	d.mu.Lock()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	return ctx, func() {
		cancel()
		d.mu.Unlock()
	}
}

// Serve listens on DIR/calico.sock and DIR/calico-ipam.sock until ctx ends,
// then removes the sockets. The sockets are 0660: whoever may write to
// them may create networks and take addresses, which is root's business.
func (d *Drivers) Serve(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("plugin directory %s: %w", dir, err)
	}
	handlers := []struct {
		name  string
		serve func(net.Listener) error
	}{
		{NetworkDriverName, network.NewHandler(NetworkDriver{d}).Serve},
		{IPAMDriverName, ipam.NewHandler(IPAMDriver{d}).Serve},
	}
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close() // a unix listener removes its socket file on Close
		}
	}
	for _, h := range handlers {
		path := filepath.Join(dir, h.name+".sock")
		l, err := listenUnix(path)
		if err != nil {
			closeAll()
			return err
		}
		listeners = append(listeners, l)
		go func() {
			if err := h.serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
				d.log.Error("plugin server stopped", "socket", path, "err", err)
			}
		}()
		d.log.Info("serving Docker plugin", "driver", h.name, "socket", path)
	}
	retry := time.NewTicker(pendingRetry)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			closeAll()
			return nil
		case <-retry.C:
			d.retryPending()
		}
	}
}

// listenUnix takes over a stale socket (nobody answers on it) but refuses
// one that another process still serves.
func listenUnix(path string) (net.Listener, error) {
	if _, err := os.Lstat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another process serves the Docker plugin at %s; stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale plugin socket %s: %w", path, err)
		}
	}
	// The process umask (022 for a daemon) makes the socket 0755 at
	// first, writable by root alone; then narrow it to 0660.
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// engineNetns is the engine's network namespace when it is not ours ("").
// The engine moves the interface Join names from its own namespace into
// the container, so the interface must be made there. On a real host the
// agent and the engine share the host's namespace; in the one-machine lab
// the agent runs in a namespace of its own while the engine does not.
func (d *Drivers) engineNetns() (string, error) {
	pid, err := d.engine.Pid()
	if err != nil {
		return "", err
	}
	if pid == 0 {
		// The socket's creator is in another pid namespace: we cannot
		// tell, so assume the engine shares ours (the usual host).
		return "", nil
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	var theirs, ours unix.Stat_t
	if err := unix.Stat(path, &theirs); err != nil {
		return "", fmt.Errorf("the engine's network namespace: %w", err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		return "", err
	}
	if theirs.Dev == ours.Dev && theirs.Ino == ours.Ino {
		return "", nil
	}
	return path, nil
}
