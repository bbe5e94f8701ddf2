// Package dockertest is the test infrastructure for the Docker integration:
// a busybox test image imported without a registry (EnsureImage), a second
// dockerd started inside a lab host's network namespace (Start, StartEngine),
// and a small client of the engine API for tests against either engine
// (Client: containers, exec, networks, and the docker CLI pointed at the
// same engine).
//
// It speaks plain HTTP over the engine's unix socket, as internal/docker
// does, so tests exercise the same API the agent uses and need no extra
// modules. It is for tests and benchmarks, never for the agent.
//
// A second Docker host in a test:
//
//	h2, _ := l.AddHost("host2", fab, "10.0.0.2/24", "")
//	e := dockertest.StartEngine(t, dockertest.EngineOptions{NetnsPath: h2.Path, Name: "host2"})
//	e.EnsureImage(ctx, dockertest.DefaultImage)
//	// host2's calico-node: DOCKER_HOST=e.Host, plugin sockets in e.PluginDir
//	id, _ := e.Run(ctx, dockertest.RunOptions{Name: "worker-3", Image: dockertest.DefaultImage, Network: "none", Tty: true})
//	ci, _ := e.Inspect(ctx, id) // ci.NetnsPath() is /proc/<pid>/ns/net
//
// Things to know:
//   - The second engine lives in a mount namespace of its own, so paths it
//     reports for mounts it made (a container's SandboxKey, exec-root/netns/...)
//     exist only there; reach a container's namespace through its pid.
//   - Call Sweep (and lab.Sweep) from TestMain: it removes engines left by
//     crashed runs, and only those whose creating process is gone.
//   - Tests sharing the machine's engine see each other's containers and
//     events; an agent under test reacts to CALICO_* variables on any
//     container there, so use them only on containers meant for it.
package dockertest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// DefaultHost is the machine's own engine.
const DefaultHost = "unix:///var/run/docker.sock"

// requestTimeout bounds a call whose context has no deadline of its own, so
// a wedged engine fails a test instead of hanging it.
const requestTimeout = 2 * time.Minute

// ErrNotFound is wrapped by errors for containers, networks or images the
// engine does not know (HTTP 404).
var ErrNotFound = errors.New("not found")

// Client talks to one engine over its unix socket.
type Client struct {
	Host   string // "unix:///path/to/docker.sock", as `docker -H` takes it
	Socket string // the socket path alone
	http   *http.Client
}

// NewClient connects to dockerHost: "unix:///path", a bare socket path, or ""
// for DefaultHost. TCP hosts are refused: every engine the tests use is local.
func NewClient(dockerHost string) (*Client, error) {
	if dockerHost == "" {
		dockerHost = DefaultHost
	}
	sock := dockerHost
	if strings.Contains(dockerHost, "://") {
		if !strings.HasPrefix(dockerHost, "unix://") {
			return nil, fmt.Errorf("dockertest: docker host %q: only unix:// sockets are supported", dockerHost)
		}
		sock = strings.TrimPrefix(dockerHost, "unix://")
	}
	if !strings.HasPrefix(sock, "/") {
		return nil, fmt.Errorf("dockertest: docker host %q: give an absolute socket path", dockerHost)
	}
	return &Client{
		Host:   "unix://" + sock,
		Socket: sock,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
			// Exec and attach streams end by closing the connection; a
			// pooled connection would only save microseconds here.
			DisableKeepAlives: true,
		}},
	}, nil
}

// apiError is the engine's error body.
type apiError struct {
	Message string `json:"message"`
}

// do sends one request and returns the response when its status is 2xx; any
// other status becomes an error carrying the engine's message.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any) (*http.Response, context.CancelFunc, error) {
	cancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
	}
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "application/x-tar"
	default:
		js, err := json.Marshal(b)
		if err != nil {
			cancel()
			return nil, nil, err
		}
		rd, ctype = bytes.NewReader(js), "application/json"
	}
	u := "http://docker" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("cannot reach the Docker engine at %s: %v (is it running? scripts/ensure-docker.sh starts the machine's engine)", c.Socket, err)
	}
	if resp.StatusCode/100 != 2 {
		defer cancel()
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var ae apiError
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &ae) == nil && ae.Message != "" {
			msg = ae.Message
		}
		err := fmt.Errorf("%s %s: %s (HTTP %d)", method, path, msg, resp.StatusCode)
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, nil, err
	}
	return resp, cancel, nil
}

// call is do for requests whose answer is JSON (decoded into out when out is
// not nil) or empty.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	resp, cancel, err := c.do(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	defer cancel()
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %v", method, path, err)
	}
	return nil
}

// Ping returns nil when the engine answers /_ping.
func (c *Client) Ping(ctx context.Context) error {
	return c.call(ctx, "GET", "/_ping", nil, nil, nil)
}

// RunOptions describe a container, as `docker run` flags do.
type RunOptions struct {
	Name     string
	Image    string
	Network  string   // --net: "none", "host", "bridge" or a network name; "" is the engine's default
	IP       string   // --ip, on Network (a user-defined network)
	IP6      string   // --ip6, on Network
	Env      []string // -e KEY=VALUE
	Labels   map[string]string
	Tty      bool     // -t (with -i, as `docker run -tid` does: an idle sh then keeps running)
	Init     bool     // --init: docker-init as PID 1, so SIGTERM stops sh at once
	Cmd      []string // the command; empty runs the image's CMD (/bin/sh for the test image)
	CapAdd   []string // --cap-add, e.g. NET_ADMIN to change addresses inside
	Hostname string
}

// Create creates a container without starting it and returns its id.
func (c *Client) Create(ctx context.Context, o RunOptions) (string, error) {
	if o.Image == "" {
		return "", errors.New("dockertest: Create: no image given")
	}
	type ipam struct {
		IPv4Address string `json:",omitempty"`
		IPv6Address string `json:",omitempty"`
	}
	type endpoint struct {
		IPAMConfig *ipam `json:",omitempty"`
	}
	body := map[string]any{
		"Image":     o.Image,
		"Env":       o.Env,
		"Labels":    o.Labels,
		"Tty":       o.Tty,
		"OpenStdin": o.Tty,
		"Hostname":  o.Hostname,
		"HostConfig": map[string]any{
			"NetworkMode": o.Network,
			"Init":        o.Init,
			"CapAdd":      o.CapAdd,
		},
	}
	if len(o.Cmd) > 0 {
		body["Cmd"] = o.Cmd
	}
	if o.IP != "" || o.IP6 != "" {
		if o.Network == "" || o.Network == "none" || o.Network == "host" || o.Network == "bridge" {
			return "", fmt.Errorf("dockertest: container %s: a fixed IP needs a user-defined network, not %q", o.Name, o.Network)
		}
		body["NetworkingConfig"] = map[string]any{"EndpointsConfig": map[string]endpoint{
			o.Network: {IPAMConfig: &ipam{IPv4Address: o.IP, IPv6Address: o.IP6}},
		}}
	}
	q := url.Values{}
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	var out struct {
		ID string `json:"Id"`
	}
	if err := c.call(ctx, "POST", "/containers/create", q, body, &out); err != nil {
		return "", fmt.Errorf("docker create %s: %w", o.Name, err)
	}
	return out.ID, nil
}

// Run creates and starts a container (`docker run -d`) and returns its id. A
// container that was created but could not start is removed again.
func (c *Client) Run(ctx context.Context, o RunOptions) (string, error) {
	id, err := c.Create(ctx, o)
	if err != nil {
		return "", err
	}
	if err := c.Start(ctx, id); err != nil {
		c.Remove(context.WithoutCancel(ctx), id)
		return "", err
	}
	return id, nil
}

// Start starts a created or stopped container.
func (c *Client) Start(ctx context.Context, nameOrID string) error {
	if err := c.call(ctx, "POST", "/containers/"+url.PathEscape(nameOrID)+"/start", nil, nil, nil); err != nil {
		return fmt.Errorf("docker start %s: %w", nameOrID, err)
	}
	return nil
}

// Stop stops a container, killing it after timeout (0 kills at once: an
// interactive sh as PID 1 ignores SIGTERM, so a grace period only waits).
func (c *Client) Stop(ctx context.Context, nameOrID string, timeout time.Duration) error {
	q := url.Values{"t": {fmt.Sprint(int(timeout.Seconds()))}}
	if err := c.call(ctx, "POST", "/containers/"+url.PathEscape(nameOrID)+"/stop", q, nil, nil); err != nil {
		return fmt.Errorf("docker stop %s: %w", nameOrID, err)
	}
	return nil
}

// Remove removes a container, running or not, with its anonymous volumes
// (`docker rm -f -v`).
func (c *Client) Remove(ctx context.Context, nameOrID string) error {
	q := url.Values{"force": {"1"}, "v": {"1"}}
	if err := c.call(ctx, "DELETE", "/containers/"+url.PathEscape(nameOrID), q, nil, nil); err != nil {
		return fmt.Errorf("docker rm -f %s: %w", nameOrID, err)
	}
	return nil
}

// ContainerIDs lists containers, stopped ones too, optionally only those
// carrying a label ("key" or "key=value").
func (c *Client) ContainerIDs(ctx context.Context, label string) ([]string, error) {
	q := url.Values{"all": {"1"}}
	if label != "" {
		f, _ := json.Marshal(map[string][]string{"label": {label}})
		q.Set("filters", string(f))
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := c.call(ctx, "GET", "/containers/json", q, nil, &list); err != nil {
		return nil, fmt.Errorf("docker ps: %w", err)
	}
	ids := make([]string, len(list))
	for i, e := range list {
		ids[i] = e.ID
	}
	return ids, nil
}

// Endpoint is a container's attachment to one network.
type Endpoint struct {
	NetworkID           string
	EndpointID          string
	Gateway             string
	IPAddress           string
	IPPrefixLen         int
	GlobalIPv6Address   string
	GlobalIPv6PrefixLen int
	MacAddress          string
}

// ContainerInfo is what tests check about a container.
type ContainerInfo struct {
	ID          string
	Name        string // without the leading "/"
	Image       string
	Status      string // created, running, exited, ...
	Running     bool
	Pid         int // 0 unless running
	ExitCode    int
	Env         []string
	Labels      map[string]string
	NetworkMode string
	SandboxKey  string              // the engine's bind mount of the container's network namespace
	Networks    map[string]Endpoint // by network name
}

// NetnsPath is the running container's network namespace, as seen from the
// host's mount namespace (the engine's SandboxKey may live in a mount
// namespace of its own, as the second engine's does).
func (ci ContainerInfo) NetnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", ci.Pid) }

// EnvValue is the value of KEY in the container's environment.
func (ci ContainerInfo) EnvValue(key string) (string, bool) {
	for _, kv := range ci.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// Inspect is `docker inspect` of a container. A missing one gives an error
// wrapping ErrNotFound.
func (c *Client) Inspect(ctx context.Context, nameOrID string) (ContainerInfo, error) {
	var raw struct {
		ID    string `json:"Id"`
		Name  string
		State struct {
			Status   string
			Running  bool
			Pid      int
			ExitCode int
		}
		Config struct {
			Image  string
			Env    []string
			Labels map[string]string
		}
		HostConfig struct {
			NetworkMode string
		}
		NetworkSettings struct {
			SandboxKey string
			Networks   map[string]Endpoint
		}
	}
	if err := c.call(ctx, "GET", "/containers/"+url.PathEscape(nameOrID)+"/json", nil, nil, &raw); err != nil {
		return ContainerInfo{}, fmt.Errorf("docker inspect %s: %w", nameOrID, err)
	}
	return ContainerInfo{
		ID: raw.ID, Name: strings.TrimPrefix(raw.Name, "/"), Image: raw.Config.Image,
		Status: raw.State.Status, Running: raw.State.Running, Pid: raw.State.Pid, ExitCode: raw.State.ExitCode,
		Env: raw.Config.Env, Labels: raw.Config.Labels, NetworkMode: raw.HostConfig.NetworkMode,
		SandboxKey: raw.NetworkSettings.SandboxKey, Networks: raw.NetworkSettings.Networks,
	}, nil
}

// ExecResult is the outcome of a command run with Exec.
type ExecResult struct {
	Stdout   string
	Stderr   string
	ExitCode int
}

// Exec runs cmd in a running container (`docker exec`, no tty) and returns
// its output and exit code. A non-zero exit code is not an error; failing to
// run the command at all is.
func (c *Client) Exec(ctx context.Context, nameOrID string, cmd ...string) (ExecResult, error) {
	if len(cmd) == 0 {
		return ExecResult{}, errors.New("dockertest: Exec: no command given")
	}
	var created struct {
		ID string `json:"Id"`
	}
	body := map[string]any{"Cmd": cmd, "AttachStdout": true, "AttachStderr": true, "Tty": false}
	if err := c.call(ctx, "POST", "/containers/"+url.PathEscape(nameOrID)+"/exec", nil, body, &created); err != nil {
		return ExecResult{}, fmt.Errorf("docker exec %s %s: %w", nameOrID, strings.Join(cmd, " "), err)
	}
	// Without Detach the engine takes over the connection and streams the
	// output, multiplexed, until the command ends and it closes it.
	resp, cancel, err := c.do(ctx, "POST", "/exec/"+created.ID+"/start", nil, map[string]any{"Detach": false, "Tty": false})
	if err != nil {
		return ExecResult{}, fmt.Errorf("docker exec %s %s: %w", nameOrID, strings.Join(cmd, " "), err)
	}
	var stdout, stderr bytes.Buffer
	err = demux(resp.Body, &stdout, &stderr)
	resp.Body.Close()
	cancel()
	if err != nil {
		return ExecResult{}, fmt.Errorf("docker exec %s %s: reading output: %v", nameOrID, strings.Join(cmd, " "), err)
	}
	// The stream ends when the process does, but the engine records the exit
	// code a moment later: poll until it says the exec is over.
	for {
		var st struct {
			Running  bool
			ExitCode int
		}
		if err := c.call(ctx, "GET", "/exec/"+created.ID+"/json", nil, nil, &st); err != nil {
			return ExecResult{}, fmt.Errorf("docker exec %s %s: %w", nameOrID, strings.Join(cmd, " "), err)
		}
		if !st.Running {
			return ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: st.ExitCode}, nil
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, fmt.Errorf("docker exec %s %s: waiting for the exit code: %w", nameOrID, strings.Join(cmd, " "), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// demux splits the engine's multiplexed stream: frames of an 8-byte header
// (stream 1 = stdout, 2 = stderr; big-endian length in bytes 4-7) and the
// payload.
func demux(r io.Reader, stdout, stderr io.Writer) error {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		var w io.Writer
		switch hdr[0] {
		case 0, 1: // 0 is stdin echoed back; there is none, count it as stdout
			w = stdout
		case 2:
			w = stderr
		default:
			return fmt.Errorf("unexpected stream type %d in the engine's output", hdr[0])
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		if _, err := io.CopyN(w, r, n); err != nil {
			return err
		}
	}
}

// NetworkOptions describe a network, as `docker network create` flags do.
type NetworkOptions struct {
	Name        string
	Driver      string            // --driver ("" is bridge)
	IPAMDriver  string            // --ipam-driver ("" is the engine's default)
	Subnets     []string          // --subnet, IPv4 and/or IPv6
	Gateways    []string          // --gateway, one per subnet when given
	IPv6        bool              // --ipv6
	Options     map[string]string // --opt
	IPAMOptions map[string]string // --ipam-opt
	Labels      map[string]string
}

// NetworkCreate creates a network and returns its id.
func (c *Client) NetworkCreate(ctx context.Context, o NetworkOptions) (string, error) {
	if o.Name == "" {
		return "", errors.New("dockertest: NetworkCreate: no name given")
	}
	if len(o.Gateways) > 0 && len(o.Gateways) != len(o.Subnets) {
		return "", fmt.Errorf("dockertest: network %s: give one gateway per subnet or none", o.Name)
	}
	type pool struct {
		Subnet  string
		Gateway string `json:",omitempty"`
	}
	cfg := []pool{}
	for i, s := range o.Subnets {
		p := pool{Subnet: s}
		if len(o.Gateways) > 0 {
			p.Gateway = o.Gateways[i]
		}
		cfg = append(cfg, p)
	}
	ipamDriver := o.IPAMDriver
	if ipamDriver == "" {
		ipamDriver = "default"
	}
	body := map[string]any{
		"Name":           o.Name,
		"CheckDuplicate": true,
		"Driver":         o.Driver,
		"EnableIPv6":     o.IPv6,
		"Options":        o.Options,
		"Labels":         o.Labels,
		"IPAM":           map[string]any{"Driver": ipamDriver, "Config": cfg, "Options": o.IPAMOptions},
	}
	var out struct {
		ID      string `json:"Id"`
		Warning string
	}
	if err := c.call(ctx, "POST", "/networks/create", nil, body, &out); err != nil {
		return "", fmt.Errorf("docker network create %s: %w", o.Name, err)
	}
	return out.ID, nil
}

// NetworkRemove removes a network (`docker network rm`).
func (c *Client) NetworkRemove(ctx context.Context, nameOrID string) error {
	if err := c.call(ctx, "DELETE", "/networks/"+url.PathEscape(nameOrID), nil, nil, nil); err != nil {
		return fmt.Errorf("docker network rm %s: %w", nameOrID, err)
	}
	return nil
}

// NetworkContainer is one container's endpoint as the network lists it.
type NetworkContainer struct {
	Name        string
	EndpointID  string
	MacAddress  string
	IPv4Address string // with its prefix length, "192.168.0.2/24"
	IPv6Address string
}

// NetworkInfo is what tests check about a network.
type NetworkInfo struct {
	ID         string `json:"Id"`
	Name       string
	Driver     string
	Scope      string
	EnableIPv6 bool
	IPAM       struct {
		Driver  string
		Options map[string]string
		Config  []struct {
			Subnet  string
			Gateway string
		}
	}
	Options    map[string]string
	Labels     map[string]string
	Containers map[string]NetworkContainer // by container id
}

// NetworkInspect is `docker network inspect`. A missing network gives an
// error wrapping ErrNotFound.
func (c *Client) NetworkInspect(ctx context.Context, nameOrID string) (NetworkInfo, error) {
	var n NetworkInfo
	if err := c.call(ctx, "GET", "/networks/"+url.PathEscape(nameOrID), nil, nil, &n); err != nil {
		return NetworkInfo{}, fmt.Errorf("docker network inspect %s: %w", nameOrID, err)
	}
	return n, nil
}

// ImageExists reports whether the engine has an image by that reference.
func (c *Client) ImageExists(ctx context.Context, ref string) (bool, error) {
	err := c.call(ctx, "GET", "/images/"+ref+"/json", nil, nil, nil)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("docker image inspect %s: %w", ref, err)
	}
	return true, nil
}

// ImportImage is `docker import` of a root filesystem tarball as repo:tag;
// changes are Dockerfile instructions applied to the image's config (CMD,
// ENV, LABEL, ...).
func (c *Client) ImportImage(ctx context.Context, tarball io.Reader, repo, tag string, changes ...string) error {
	q := url.Values{"fromSrc": {"-"}, "repo": {repo}, "tag": {tag}}
	for _, ch := range changes {
		q.Add("changes", ch)
	}
	resp, cancel, err := c.do(ctx, "POST", "/images/create", q, tarball)
	if err != nil {
		return fmt.Errorf("docker import %s:%s: %w", repo, tag, err)
	}
	defer cancel()
	defer resp.Body.Close()
	// The answer is a stream of JSON progress messages; a failure midway
	// arrives as an "error" field in it, under HTTP 200.
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Error  string `json:"error"`
			Status string `json:"status"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("docker import %s:%s: reading the engine's answer: %v", repo, tag, err)
		}
		if m.Error != "" {
			return fmt.Errorf("docker import %s:%s: %s", repo, tag, m.Error)
		}
	}
}

// CLI runs the docker command-line client against this engine (`docker -H
// HOST args...`), to mirror what a user types, and returns its combined
// output. The error includes the output when the command fails.
func (c *Client) CLI(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", c.Host}, args...)...)
	// A DOCKER_CONTEXT or DOCKER_HOST in the environment would fight -H.
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "DOCKER_CONTEXT=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker -H %s %s: %v: %s", c.Host, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
