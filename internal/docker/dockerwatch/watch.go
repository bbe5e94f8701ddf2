// Package dockerwatch keeps Docker containers' endpoints in step with the
// containers: it follows the engine's events so that a container started
// with CALICO_IP (and CALICO_PROFILE) is wired when it starts, and any
// container's endpoint goes, and its addresses are released, when the
// container stops or is removed. On start and after every lost event
// stream it re-lists, so nothing leaks while the agent was down.
//
// Endpoints made by the libnetwork driver are the engine's business (it
// calls the driver on every stop) and are left alone here.
package dockerwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/docker"
)

// The environment of a container that asks to be wired when it starts.
const (
	EnvIP      = "CALICO_IP"      // auto, auto6, an address, or several joined by commas
	EnvProfile = "CALICO_PROFILE" // profile names joined by commas; created if missing
)

// Request builds the workload request for a running container: its
// namespace, its name, the labels `docker run --label` gave it (one that
// is no valid endpoint label is skipped and returned in skipped, never
// failing the container), and, when the container is also on another
// network (the engine's bridge), an interface of its own (cali0) with
// routes to the pools only, so its default route stays where the engine
// put it.
func Request(ctx context.Context, c *client.Client, engine *docker.Engine, node string, ctr docker.Container, ips, profiles []string) (req client.WorkloadRequest, skipped []error, err error) {
	req = client.WorkloadRequest{
		Node: node, Name: ctr.Name, IPs: ips, Profiles: profiles,
		NetnsPath: ctr.NetnsPath(), Orchestrator: api.OrchestratorDocker, ContainerID: ctr.ID,
		Interface: "eth0", ContainerName: ctr.Name,
	}
	run, err := engine.RunLabels(ctx, ctr)
	if err != nil {
		return req, nil, fmt.Errorf("container %q: reading its image's labels, to tell which labels docker run gave: %w", ctr.Name, err)
	}
	req.Labels, skipped = client.ForeignLabels(run)
	if ctr.NetworkMode != "none" && ctr.NetworkMode != "" {
		req.Interface = "cali0"
		pools, err := c.Pools(ctx, 0)
		if err != nil {
			return req, skipped, err
		}
		for _, p := range pools {
			if pr, err := netip.ParsePrefix(p.CIDR); err == nil {
				req.Routes = append(req.Routes, pr)
			}
		}
	}
	return req, skipped, nil
}

// Watcher follows one engine for one node.
type Watcher struct {
	C      *client.Client
	Node   string
	Engine *docker.Engine
	Log    *slog.Logger
	// Retry is the pause before reconnecting to a lost engine.
	Retry time.Duration

	mu sync.Mutex
	// problems holds, by container id, why a running container that asked
	// for CALICO_IP is not wired: the container runs on regardless, so a
	// log line alone is too easy to miss.
	problems map[string]string
}

// Problems are the lines `calicoctl status` shows for running containers
// that asked to be wired and are not.
func (w *Watcher) Problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Values(w.problems))
}

// setProblem records (or, with msg "", forgets) why ctr is not wired.
func (w *Watcher) setProblem(id, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if msg == "" {
		delete(w.problems, id)
		return
	}
	if w.problems == nil {
		w.problems = map[string]string{}
	}
	w.problems[id] = msg
}

// notWiring logs why ctr is not wired and keeps it for `calicoctl status`.
func (w *Watcher) notWiring(log *slog.Logger, ctr docker.Container, msg string, args ...any) {
	log.Error("not wiring container: "+msg, args...)
	w.setProblem(ctr.ID, fmt.Sprintf("Docker container %s (%.12s) runs unwired: %s (see the agent's log)", ctr.Name, ctr.ID, msg))
}

// Run follows the engine until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	if w.Retry == 0 {
		w.Retry = 2 * time.Second
	}
	log := w.Log.With("component", "docker", "engine", w.Engine.Socket())
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		events := make(chan docker.Event, 1024)
		done := make(chan error, 1)
		// Follow from before the re-list, so an event that happens during
		// it is still seen afterwards (handling one twice is harmless).
		since := time.Now().Add(-time.Second)
		go func() {
			done <- w.Engine.Events(sctx, since, func(e docker.Event) {
				select {
				case events <- e:
				case <-sctx.Done():
				}
			})
		}()
		if err := w.Resync(ctx); err != nil {
			log.Warn("cannot re-list the engine's containers; will retry", "err", err)
		}
	follow:
		for {
			select {
			case e := <-events:
				w.Handle(ctx, e)
			case err := <-done:
				if ctx.Err() == nil {
					log.Warn("lost the engine's event stream; reconnecting", "err", err, "retry", w.Retry)
				}
				break follow
			case <-ctx.Done():
				break follow
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(w.Retry):
		}
	}
}

// Handle reacts to one event.
func (w *Watcher) Handle(ctx context.Context, e docker.Event) {
	switch e.Action {
	case "die", "destroy":
		w.setProblem(e.ID, "")
		w.unwire(ctx, e.ID, "container "+e.Action)
	case "start":
		ctr, err := w.Engine.Lookup(ctx, e.ID)
		if err != nil {
			if !errors.Is(err, docker.ErrNoSuchContainer) {
				w.Log.Warn("cannot inspect started container", "container", e.Name, "err", err)
			}
			return
		}
		w.wireIfAsked(ctx, ctr)
	}
}

// Resync removes the endpoints of containers that are gone, stopped or
// restarted (a new namespace), and wires running containers that ask for
// it and have no endpoint.
func (w *Watcher) Resync(ctx context.Context) error {
	eps, err := w.C.Endpoints(ctx, w.Node)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, ep := range eps {
		if ep.Orchestrator != api.OrchestratorDocker || ep.ContainerID == "" {
			continue
		}
		ctr, err := w.Engine.Lookup(ctx, ep.ContainerID)
		switch {
		case errors.Is(err, docker.ErrNoSuchContainer):
			w.remove(ctx, ep, "container is gone")
		case err != nil:
			return err
		case !ctr.Running:
			w.remove(ctx, ep, "container is stopped")
		case ctr.NetnsPath() != ep.NetnsPath || !netdev.LinkExists(api.WorkloadIfaceName(ep.Node, ep.Workload)):
			w.remove(ctx, ep, "container was restarted")
		default:
			have[ep.ContainerID] = true
		}
	}
	ids, err := w.Engine.RunningIDs(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	maps.DeleteFunc(w.problems, func(id, _ string) bool { return !slices.Contains(ids, id) })
	w.mu.Unlock()
	for _, id := range ids {
		if have[id] {
			continue
		}
		ctr, err := w.Engine.Lookup(ctx, id)
		if err != nil {
			continue // gone since the listing
		}
		w.wireIfAsked(ctx, ctr)
	}
	return nil
}

func (w *Watcher) unwire(ctx context.Context, containerID, why string) {
	eps, err := w.C.Endpoints(ctx, w.Node)
	if err != nil {
		w.Log.Warn("cannot list endpoints", "err", err)
		return
	}
	for _, ep := range eps {
		if ep.Orchestrator == api.OrchestratorDocker && ep.ContainerID == containerID {
			w.remove(ctx, ep, why)
		}
	}
}

func (w *Watcher) remove(ctx context.Context, ep api.Endpoint, why string) {
	// RemoveWorkload deletes only the interface derived from the
	// workload's name, whatever the record names, and says so.
	notes, err := w.C.RemoveWorkload(ctx, w.Node, ep.Workload)
	for _, n := range notes {
		w.Log.Warn(n, "container", ep.Workload)
	}
	if err != nil {
		w.Log.Warn("cannot remove a stopped container's endpoint", "container", ep.Workload, "err", err)
		return
	}
	w.Log.Info("removed endpoint and released its addresses", "container", ep.Workload, "why", why,
		"addrs", strings.Join(append(ep.IPv4Nets, ep.IPv6Nets...), ","))
}

// wireIfAsked wires a running container whose `docker run` set CALICO_IP.
// A bad value is logged as one line naming the container, and nothing is
// left half made: profiles this call created go again.
func (w *Watcher) wireIfAsked(ctx context.Context, ctr docker.Container) {
	if _, ok := ctr.Env[EnvIP]; !ok || !ctr.Running {
		return // the common case, without asking the engine about the image
	}
	w.setProblem(ctr.ID, "") // set again below if it still fails
	log := w.Log.With("container", ctr.Name)
	// Only what the person running the container asked for counts: an
	// image's own ENV CALICO_PROFILE=db would otherwise put every container
	// of that image, whoever runs it, into db, and ENV CALICO_IP would have
	// it wired without anyone asking.
	imageEnv, err := w.Engine.ImageEnv(ctx, ctr.Image)
	if err != nil {
		w.notWiring(log, ctr, "cannot read its image's environment, so cannot tell what docker run set: "+err.Error(), "image", ctr.Image)
		return
	}
	env := RunEnv(ctr.Env, imageEnv)
	if ignored := fromImage(ctr.Env, env); len(ignored) > 0 {
		log.Info("ignoring Calico settings that come from the container's image; give them with docker run -e (a value equal to the image's own cannot be told from it: write it differently, e.g. -e 'CALICO_IP= auto')",
			"ignored", strings.Join(ignored, ","), "image", ctr.Image)
	}
	ipVal, ok := env[EnvIP]
	if !ok {
		return
	}
	if ep, _, err := w.C.Endpoint(ctx, w.Node, ctr.Name); err == nil {
		if ep.ContainerID == ctr.ID && ep.NetnsPath == ctr.NetnsPath() && netdev.LinkExists(api.WorkloadIfaceName(ep.Node, ep.Workload)) {
			return // already wired: a repeated event
		}
		if !w.stale(ctx, ep, ctr) {
			w.notWiring(log, ctr, fmt.Sprintf("an endpoint named %s already belongs to another workload on this host", ctr.Name),
				"fix", "rename the container, or remove that endpoint with `calicoctl container remove`")
			return
		}
		w.remove(ctx, ep, "replaced by a new container of that name")
	}
	ips, profiles, err := ParseEnv(ipVal, env[EnvProfile])
	if err != nil {
		w.notWiring(log, ctr, err.Error(), "fix", "correct the value and restart the container")
		return
	}
	var created []string
	for _, p := range profiles {
		if _, err := w.C.Profile(ctx, p); err == nil {
			continue
		}
		if err := w.C.AddProfile(ctx, p, true); err != nil {
			w.notWiring(log, ctr, err.Error())
			w.dropProfiles(ctx, created)
			return
		}
		created = append(created, p)
	}
	req, skipped, err := Request(ctx, w.C, w.Engine, w.Node, ctr, ips, profiles)
	for _, s := range skipped {
		log.Warn("Docker label not made an endpoint label: "+s.Error(), "fix", "labels take Kubernetes' syntax, outside projectcalico.org/")
	}
	if err == nil {
		var ep api.Endpoint
		if ep, err = w.C.AddWorkload(ctx, req); err == nil {
			log.Info("wired container", "addrs", strings.Join(append(ep.IPv4Nets, ep.IPv6Nets...), ","), "profiles", profiles, "iface", ep.InterfaceName)
			return
		}
	}
	w.notWiring(log, ctr, fmt.Sprintf("%s=%s: %v", EnvIP, ipVal, err))
	w.dropProfiles(ctx, created)
}

// stale tells whether ep (named like ctr) may be replaced for ctr: it is a
// Docker endpoint of this container from before a restart, or of a
// container that is gone or stopped. Endpoints of other orchestrators, and
// of other running containers, are not ours to take.
func (w *Watcher) stale(ctx context.Context, ep api.Endpoint, ctr docker.Container) bool {
	if ep.Orchestrator != api.OrchestratorDocker {
		return false
	}
	if ep.ContainerID == ctr.ID {
		return true
	}
	old, err := w.Engine.Lookup(ctx, ep.ContainerID)
	return errors.Is(err, docker.ErrNoSuchContainer) || err == nil && !old.Running
}

func (w *Watcher) dropProfiles(ctx context.Context, names []string) {
	for _, p := range names {
		_ = w.C.RemoveProfile(ctx, p, false)
	}
}

// RunEnv is the part of a container's environment that `docker run` (or
// the API's create call) set: the container's merged environment without
// the entries it has exactly as the image has them. A -e that overrides an
// image's value with another one is kept; a -e that repeats the image's
// value exactly cannot be told from the image's and is dropped with it.
func RunEnv(merged map[string]string, image []string) map[string]string {
	img := map[string]string{}
	for _, kv := range image {
		if k, v, ok := strings.Cut(kv, "="); ok {
			img[k] = v // the last of repeated keys wins, as in the engine
		}
	}
	out := make(map[string]string, len(merged))
	for k, v := range merged {
		if iv, ok := img[k]; ok && iv == v {
			continue
		}
		out[k] = v
	}
	return out
}

// fromImage lists the Calico variables of merged that RunEnv left out.
func fromImage(merged, run map[string]string) []string {
	var out []string
	for _, k := range []string{EnvIP, EnvProfile} {
		if _, inMerged := merged[k]; inMerged {
			if _, inRun := run[k]; !inRun {
				out = append(out, k)
			}
		}
	}
	return out
}

// ParseEnv reads CALICO_IP and CALICO_PROFILE. Every value is checked
// before anything is made.
func ParseEnv(ipVal, profileVal string) (ips, profiles []string, err error) {
	for _, s := range strings.Split(ipVal, ",") {
		s = strings.TrimSpace(s)
		switch s {
		case "auto", "auto6":
		case "":
			return nil, nil, fmt.Errorf("%s is empty; give auto, auto6 or an address", EnvIP)
		default:
			if _, err := api.ParseWorkloadIP(s); err != nil {
				return nil, nil, fmt.Errorf("%s=%s: %v", EnvIP, ipVal, err)
			}
		}
		ips = append(ips, s)
	}
	if profileVal != "" {
		for _, p := range strings.Split(profileVal, ",") {
			p = strings.TrimSpace(p)
			if err := api.ValidateName("profile", p); err != nil {
				return nil, nil, fmt.Errorf("%s=%s: %v", EnvProfile, profileVal, err)
			}
			profiles = append(profiles, p)
		}
	}
	return ips, profiles, nil
}
