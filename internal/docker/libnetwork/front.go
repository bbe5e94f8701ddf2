package libnetwork

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/daemon"
)

// The engine finds a legacy plugin by its socket file and, when the file is
// missing or nobody answers on it, retries for 15 s (docker run) to 60 s
// (docker rm) before failing. So the sockets the engine knows are served
// by a small front process that outlives agent restarts: it forwards every
// call to the sockets the agent serves in its own run directory, and
// answers "not running" at once while the agent is down. The agent starts
// the front when there is none; `calicoctl node stop --cleanup` and `node
// remove` stop it.

// startWait is how long the front holds a call while the agent process is
// alive but not serving yet (it waits for its node record and reconciles
// first): an engine call made just after `calicoctl node` returns succeeds.
const startWait = callTimeout

// FrontFiles are where one node's front and the agent's own sockets live.
type FrontFiles struct {
	Backend   string // directory of the sockets the agent serves
	PIDFile   string // the front's
	LogFile   string // the front's
	AgentPID  string // calico-node's pid file, as `calicoctl node` writes it
	PluginDir string // the sockets the engine knows
}

// Front returns node's files, under CALICO_STATE_DIR when set (as calicoctl
// places the agent's pid and log files).
func Front(node, pluginDir string) FrontFiles {
	run, logs := filepath.Join("/var/run/calico", node), filepath.Join("/var/log/calico", node)
	if d := os.Getenv("CALICO_STATE_DIR"); d != "" {
		run, logs = filepath.Join(d, "run", "calico", node), filepath.Join(d, "log", "calico", node)
	}
	if pluginDir == "" {
		pluginDir = DefaultPluginDir
	}
	return FrontFiles{
		Backend:   filepath.Join(run, "plugins"),
		PIDFile:   filepath.Join(run, "plugin-front.pid"),
		LogFile:   filepath.Join(logs, "plugin-front.log"),
		AgentPID:  filepath.Join(run, "calico-node.pid"),
		PluginDir: pluginDir,
	}
}

// EnsureFront starts node's front (argv runs RunFront) unless it already
// serves f.PluginDir, and returns once the engine's sockets exist.
func EnsureFront(f FrontFiles, argv []string) error {
	if _, alive := daemon.Running(f.PIDFile); alive {
		if f.socketsExist() {
			return nil
		}
		// A front for another plugin directory (--plugin-dir changed).
		if _, err := daemon.Stop(f.PIDFile, 5*time.Second); err != nil {
			return fmt.Errorf("stop the Docker plugin front: %w", err)
		}
	}
	spec := daemon.Spec{Argv: argv, LogFile: f.LogFile, PIDFile: f.PIDFile}
	p, err := daemon.Start(spec)
	if err != nil {
		return fmt.Errorf("start the Docker plugin front: %w", err)
	}
	return daemon.WaitReady(p, spec, 5*time.Second, func() error {
		if !f.socketsExist() {
			return errors.New("no sockets yet")
		}
		return nil
	})
}

func (f FrontFiles) socketsExist() bool {
	for _, name := range []string{NetworkDriverName, IPAMDriverName} {
		if _, err := os.Stat(filepath.Join(f.PluginDir, name+".sock")); err != nil {
			return false
		}
	}
	return true
}

// StopFront stops node's front (its sockets go with it); false when none ran.
func StopFront(f FrontFiles) (bool, error) {
	return daemon.Stop(f.PIDFile, 5*time.Second)
}

// RunFront serves the engine's sockets in f.PluginDir until ctx ends.
func RunFront(ctx context.Context, log *slog.Logger, node string, f FrontFiles) error {
	if err := os.MkdirAll(f.PluginDir, 0o755); err != nil {
		return fmt.Errorf("plugin directory %s: %w", f.PluginDir, err)
	}
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			s.Close() // closes the listener, which removes its socket file
		}
	}()
	agentAlive := func() bool {
		_, alive := daemon.Running(f.AgentPID)
		return alive
	}
	for _, d := range []struct{ name, implements string }{{NetworkDriverName, "NetworkDriver"}, {IPAMDriverName, "IpamDriver"}} {
		path := filepath.Join(f.PluginDir, d.name+".sock")
		l, err := listenUnix(path)
		if err != nil {
			return err
		}
		h := newFrontHandler(node, filepath.Join(f.Backend, d.name+".sock"), agentAlive)
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/Plugin.Activate" {
				// Answered here, so the engine keeps the driver while the
				// agent is down and gets each call's error at once.
				activate(w, d.implements)
				return
			}
			h.ServeHTTP(w, r)
		})}
		servers = append(servers, s)
		go func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("plugin front stopped", "socket", path, "err", err)
			}
		}()
		log.Info("serving Docker plugin front", "driver", d.name, "socket", path, "agent", filepath.Join(f.Backend, d.name+".sock"))
	}
	<-ctx.Done()
	return nil
}

// frontHandler forwards calls to one of the agent's sockets; alive tells
// whether the agent runs (and so may still be starting).
type frontHandler struct {
	node, backend string
	alive         func() bool
	proxy         *httputil.ReverseProxy
}

func newFrontHandler(node, backend string, alive func() bool) *frontHandler {
	h := &frontHandler{node: node, backend: backend, alive: alive}
	h.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "calico-node"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", backend)
			},
			DisableKeepAlives: true, // a restarted agent is a new socket
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			pluginError(w, fmt.Sprintf("calico-node %s did not answer: %v", node, err))
		},
	}
	return h
}

// activate answers the engine's handshake.
func activate(w http.ResponseWriter, implements ...string) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	json.NewEncoder(w).Encode(map[string][]string{"Implements": implements})
}

func (h *frontHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	deadline := time.Now().Add(startWait)
	for {
		c, err := net.DialTimeout("unix", h.backend, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if !h.alive() {
			pluginError(w, fmt.Sprintf("calico-node %s is not running on this host; start it with `calicoctl node --libnetwork`", h.node))
			return
		}
		if time.Now().After(deadline) || r.Context().Err() != nil {
			pluginError(w, fmt.Sprintf("calico-node %s runs but does not serve the Docker plugin; see its log", h.node))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.proxy.ServeHTTP(w, r)
}

// pluginError answers as a plugin's failed call does: the engine shows Err.
func pluginError(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	w.WriteHeader(http.StatusInternalServerError)
	json.NewEncoder(w).Encode(map[string]string{"Err": msg})
}

// ServeManaged serves both drivers on one socket until ctx ends, as a
// managed (v2) plugin declares them: the engine starts the plugin's one
// process and talks to it there. The calls go to the sockets the agent
// serves in backend, the same way as through the front.
func ServeManaged(ctx context.Context, log *slog.Logger, node, socket, backend string) error {
	l, err := listenUnix(socket)
	if err != nil {
		return err
	}
	running := func() bool { return true } // the agent is this process
	nw := newFrontHandler(node, filepath.Join(backend, NetworkDriverName+".sock"), running)
	ipam := newFrontHandler(node, filepath.Join(backend, IPAMDriverName+".sock"), running)
	s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/Plugin.Activate":
			activate(w, "NetworkDriver", "IpamDriver")
		case strings.HasPrefix(r.URL.Path, "/IpamDriver."):
			ipam.ServeHTTP(w, r)
		default:
			nw.ServeHTTP(w, r)
		}
	})}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	log.Info("serving the managed Docker plugin", "socket", socket)
	if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
