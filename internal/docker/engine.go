// Package docker talks to the Docker engine: finding a container's network
// namespace, and (later) the libnetwork plugins.
package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Container is what we need to know about a container.
type Container struct {
	ID      string
	Name    string
	Pid     int
	Running bool
}

// NetnsPath is the container's network namespace as seen from the host.
func (c Container) NetnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", c.Pid) }

// Engine is a client of the engine API over its unix socket.
type Engine struct {
	http   *http.Client
	socket string
}

// NewEngine connects to DOCKER_HOST when it is a unix socket, else /var/run/docker.sock.
func NewEngine() *Engine {
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		sock = strings.TrimPrefix(h, "unix://")
	}
	return &Engine{socket: sock, http: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}}
}

// Inspect finds a container by name or id.
func (e *Engine) Inspect(ctx context.Context, nameOrID string) (Container, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://docker/containers/"+url.PathEscape(nameOrID)+"/json", nil)
	resp, err := e.http.Do(req)
	if err != nil {
		return Container{}, fmt.Errorf("cannot reach the Docker engine at %s: %v (is it running? for a network namespace workload, give --netns PATH)", e.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return Container{}, fmt.Errorf("unknown container %q: Docker has no container by that name or id (for a network namespace workload, give --netns PATH)", nameOrID)
	}
	if resp.StatusCode != http.StatusOK {
		return Container{}, fmt.Errorf("docker inspect %s: HTTP %d", nameOrID, resp.StatusCode)
	}
	var body struct {
		ID    string `json:"Id"`
		Name  string `json:"Name"`
		State struct {
			Running bool `json:"Running"`
			Pid     int  `json:"Pid"`
		} `json:"State"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Container{}, fmt.Errorf("docker inspect %s: %v", nameOrID, err)
	}
	c := Container{ID: body.ID, Name: strings.TrimPrefix(body.Name, "/"), Pid: body.State.Pid, Running: body.State.Running}
	if !c.Running || c.Pid == 0 {
		return c, fmt.Errorf("container %q is not running; start it with `docker start %s` first", nameOrID, nameOrID)
	}
	return c, nil
}
