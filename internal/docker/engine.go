// Package docker talks to the Docker engine over its API socket: finding a
// container's network namespace, listing containers, reading networks and
// following the engine's events. Plain HTTP over the unix socket keeps the
// dependency small: we need six calls, not the whole engine client.
package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where the engine listens unless DOCKER_HOST says otherwise.
const DefaultSocket = "/var/run/docker.sock"

// ErrNoSuchContainer is returned (wrapped) when the engine has no such container.
var ErrNoSuchContainer = errors.New("no such container")

// Container is what we need to know about a container.
type Container struct {
	ID          string
	Name        string
	Pid         int
	Running     bool
	Env         map[string]string // from its config: KEY=VALUE, the image's merged with docker run's
	NetworkMode string            // none, default, bridge, host, a network name or container:ID
	Image       string            // the image's id (sha256:...)
	Labels      map[string]string // from its config: the image's merged with docker run --label
}

// NetnsPath is the container's network namespace as seen from the host.
func (c Container) NetnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", c.Pid) }

// Engine is a client of the engine API over its unix socket.
type Engine struct {
	http   *http.Client
	stream *http.Client // no overall timeout: for the events stream
	socket string
}

// SocketFromHost turns a DOCKER_HOST-style address (unix:///path or /path)
// into a socket path; "" means the default. Other schemes are refused: the
// agent must run beside its engine.
func SocketFromHost(host string) (string, error) {
	switch {
	case host == "":
		return DefaultSocket, nil
	case strings.HasPrefix(host, "unix://"):
		return strings.TrimPrefix(host, "unix://"), nil
	case strings.HasPrefix(host, "/"):
		return host, nil
	}
	return "", fmt.Errorf("docker host %q: only unix sockets are supported (unix:///var/run/docker.sock)", host)
}

// NewEngine is a client of the engine at DOCKER_HOST (a unix socket), else
// at /var/run/docker.sock.
func NewEngine() (*Engine, error) {
	sock, err := SocketFromHost(os.Getenv("DOCKER_HOST"))
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST: %w", err)
	}
	return NewEngineAt(sock), nil
}

// NewEngineAt is a client of the engine listening on the unix socket at path.
func NewEngineAt(sock string) *Engine {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	return &Engine{
		socket: sock,
		http:   &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial}},
		stream: &http.Client{Transport: &http.Transport{DialContext: dial}},
	}
}

// Socket is the engine's API socket path.
func (e *Engine) Socket() string { return e.socket }

func (e *Engine) unreachable(err error) error {
	return fmt.Errorf("cannot reach the Docker engine at %s: %v (is it running? for a network namespace workload, give --netns PATH)", e.socket, err)
}

// get decodes the JSON answer of GET path into v; a 404 is ErrNotFound-like
// and left to the caller through the returned status.
func (e *Engine) get(ctx context.Context, path string, v any) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://docker"+path, nil)
	resp, err := e.http.Do(req)
	if err != nil {
		return 0, e.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode, fmt.Errorf("docker GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("docker GET %s: %v", path, err)
	}
	return resp.StatusCode, nil
}

type inspectBody struct {
	ID    string `json:"Id"`
	Name  string `json:"Name"`
	Image string `json:"Image"`
	State struct {
		Running bool `json:"Running"`
		Pid     int  `json:"Pid"`
	} `json:"State"`
	Config struct {
		Env    []string          `json:"Env"`
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	HostConfig struct {
		NetworkMode string `json:"NetworkMode"`
	} `json:"HostConfig"`
}

// Lookup finds a container by name or id, running or not. An unknown
// container is an error wrapping ErrNoSuchContainer.
func (e *Engine) Lookup(ctx context.Context, nameOrID string) (Container, error) {
	var body inspectBody
	status, err := e.get(ctx, "/containers/"+url.PathEscape(nameOrID)+"/json", &body)
	if status == http.StatusNotFound {
		return Container{}, fmt.Errorf("unknown container %q: Docker has no container by that name or id (for a network namespace workload, give --netns PATH): %w", nameOrID, ErrNoSuchContainer)
	}
	if err != nil {
		return Container{}, err
	}
	c := Container{
		ID: body.ID, Name: strings.TrimPrefix(body.Name, "/"),
		Pid: body.State.Pid, Running: body.State.Running,
		NetworkMode: body.HostConfig.NetworkMode,
		Env:         map[string]string{},
		Image:       body.Image,
		Labels:      body.Config.Labels,
	}
	for _, kv := range body.Config.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			c.Env[k] = v
		}
	}
	return c, nil
}

// ImageEnv is the environment an image gives its containers (its ENV
// lines), as KEY=VALUE. A container's own Env is this merged with what
// `docker run -e` set, and the engine keeps no record of which was which.
func (e *Engine) ImageEnv(ctx context.Context, image string) ([]string, error) {
	var body struct {
		Config struct {
			Env []string `json:"Env"`
		} `json:"Config"`
	}
	if image == "" {
		return nil, errors.New("the container names no image")
	}
	if _, err := e.get(ctx, "/images/"+url.PathEscape(image)+"/json", &body); err != nil {
		return nil, err
	}
	return body.Config.Env, nil
}

// RunLabels are the labels `docker run --label` (or the API's create call)
// gave ctr: its merged labels without those it has exactly as its image
// has them. An image's labels are its author's, not a statement by whoever
// runs it, so they must not choose the policy its containers get; a
// --label that repeats the image's value exactly cannot be told from it.
func (e *Engine) RunLabels(ctx context.Context, ctr Container) (map[string]string, error) {
	if len(ctr.Labels) == 0 {
		return nil, nil
	}
	var body struct {
		Config struct {
			Labels map[string]string `json:"Labels"`
		} `json:"Config"`
	}
	if ctr.Image == "" {
		return nil, errors.New("the container names no image")
	}
	if _, err := e.get(ctx, "/images/"+url.PathEscape(ctr.Image)+"/json", &body); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ctr.Labels))
	for k, v := range ctr.Labels {
		if iv, ok := body.Config.Labels[k]; ok && iv == v {
			continue
		}
		out[k] = v
	}
	return out, nil
}

// Inspect finds a running container by name or id: a stopped one is an
// error that says how to start it.
func (e *Engine) Inspect(ctx context.Context, nameOrID string) (Container, error) {
	c, err := e.Lookup(ctx, nameOrID)
	if err != nil {
		return c, err
	}
	if !c.Running || c.Pid == 0 {
		return c, fmt.Errorf("container %q is not running; start it with `docker start %s` first", nameOrID, nameOrID)
	}
	return c, nil
}

// RunningIDs lists the ids of the running containers.
func (e *Engine) RunningIDs(ctx context.Context) ([]string, error) {
	var list []struct {
		ID string `json:"Id"`
	}
	if _, err := e.get(ctx, "/containers/json", &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// Network is what the drivers need to know about a Docker network.
type Network struct {
	ID         string
	Name       string
	Driver     string
	IPAMDriver string
	Labels     map[string]string // docker network create --label
	// Endpoints maps the engine's endpoint ids on the network to their
	// containers' ids.
	Endpoints map[string]string
}

// NetworkInspect reads one network by id or name.
func (e *Engine) NetworkInspect(ctx context.Context, id string) (Network, error) {
	var body struct {
		ID     string `json:"Id"`
		Name   string `json:"Name"`
		Driver string `json:"Driver"`
		IPAM   struct {
			Driver string `json:"Driver"`
		} `json:"IPAM"`
		Labels     map[string]string `json:"Labels"`
		Containers map[string]struct {
			EndpointID string `json:"EndpointID"`
		} `json:"Containers"`
	}
	if _, err := e.get(ctx, "/networks/"+url.PathEscape(id), &body); err != nil {
		return Network{}, err
	}
	n := Network{ID: body.ID, Name: body.Name, Driver: body.Driver, IPAMDriver: body.IPAM.Driver, Labels: body.Labels, Endpoints: map[string]string{}}
	for ctr, ep := range body.Containers {
		// "ep-<endpoint id>": the engine has not put the endpoint in its
		// container's sandbox yet (it lists it so while it joins).
		if !strings.HasPrefix(ctr, "ep-") {
			n.Endpoints[ep.EndpointID] = ctr
		}
	}
	return n, nil
}

// DriverEndpoints lists the engine's networks of one driver and the
// endpoints (by endpoint id) of the containers attached to them now.
func (e *Engine) DriverEndpoints(ctx context.Context, driver string) (networks, endpoints map[string]bool, err error) {
	var list []struct {
		ID string `json:"Id"`
	}
	filters := fmt.Sprintf(`{"driver":[%q]}`, driver)
	if _, err := e.get(ctx, "/networks?filters="+url.QueryEscape(filters), &list); err != nil {
		return nil, nil, err
	}
	networks, endpoints = map[string]bool{}, map[string]bool{}
	for _, n := range list {
		var body struct {
			ID         string `json:"Id"`
			Containers map[string]struct {
				EndpointID string `json:"EndpointID"`
			} `json:"Containers"`
		}
		if _, err := e.get(ctx, "/networks/"+url.PathEscape(n.ID), &body); err != nil {
			return nil, nil, err
		}
		networks[body.ID] = true
		for _, c := range body.Containers {
			endpoints[c.EndpointID] = true
		}
	}
	return networks, endpoints, nil
}

// Event is one container event from the engine.
type Event struct {
	Action string // start, die, destroy, ...
	ID     string // the container's id
	Name   string
}

// Events follows the engine's container start/die/destroy events until ctx
// ends or the stream breaks (the caller re-lists and reconnects).
//
// Events since that time are replayed first, so a caller that takes the
// time, then lists, then follows, misses nothing in between.
func (e *Engine) Events(ctx context.Context, since time.Time, fn func(Event)) error {
	filters := `{"type":["container"],"event":["start","die","destroy"]}`
	q := "filters=" + url.QueryEscape(filters)
	if !since.IsZero() {
		q += fmt.Sprintf("&since=%d.%09d", since.Unix(), since.Nanosecond())
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://docker/events?"+q, nil)
	resp, err := e.stream.Do(req)
	if err != nil {
		return e.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("docker events: HTTP %d", resp.StatusCode)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Action string `json:"Action"`
			Actor  struct {
				ID         string            `json:"ID"`
				Attributes map[string]string `json:"Attributes"`
			} `json:"Actor"`
		}
		if err := dec.Decode(&m); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("docker events: stream ended: %v", err)
		}
		fn(Event{Action: m.Action, ID: m.Actor.ID, Name: m.Actor.Attributes["name"]})
	}
}

// Pid is the engine's process id, read from the peer credentials of a
// connection to its socket. The libnetwork driver needs the engine's
// network namespace: the engine moves the interface the driver names from
// its own namespace into the container.
func (e *Engine) Pid() (int, error) {
	c, err := net.DialTimeout("unix", e.socket, 5*time.Second)
	if err != nil {
		return 0, e.unreachable(err)
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("engine at %s: peer credentials: %v", e.socket, serr)
	}
	return int(cred.Pid), nil
}
