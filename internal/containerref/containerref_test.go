package containerref

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/docker"
)

// fakeEndpoints is this host's endpoints, or a datastore that fails.
type fakeEndpoints struct {
	eps     []api.Endpoint
	getErr  error // from Endpoint, instead of looking
	listErr error
}

func (f fakeEndpoints) Endpoint(_ context.Context, node, name string) (api.Endpoint, int64, error) {
	if f.getErr != nil {
		return api.Endpoint{}, 0, f.getErr
	}
	for _, ep := range f.eps {
		if ep.Workload == name {
			return ep, 1, nil
		}
	}
	return api.Endpoint{}, 0, fmt.Errorf("unknown container %q: %w", name, datastore.ErrNotFound)
}

func (f fakeEndpoints) Endpoints(context.Context, string) ([]api.Endpoint, error) {
	return f.eps, f.listErr
}

// fakeEngine knows containers by name and id, or fails.
type fakeEngine struct {
	ctrs []docker.Container
	err  error
}

func (f fakeEngine) Lookup(_ context.Context, nameOrID string) (docker.Container, error) {
	if f.err != nil {
		return docker.Container{}, f.err
	}
	for _, c := range f.ctrs {
		if c.Name == nameOrID || c.ID == nameOrID {
			return c, nil
		}
	}
	return docker.Container{}, fmt.Errorf("unknown container %q: %w", nameOrID, docker.ErrNoSuchContainer)
}

func TestResolveKeepsEachFailure(t *testing.T) {
	const id = "0123456789abcdef0123"
	honest := fakeEndpoints{eps: []api.Endpoint{
		{Workload: "w0", ContainerID: ""},
		{Workload: "web", Orchestrator: api.OrchestratorDocker, ContainerID: id}, // added as `container add web ...`
		// The libnetwork driver's: named after the engine's endpoint id,
		// with the container learnt from the engine.
		{Workload: "docker-aaaaaaaaaaaa", Orchestrator: api.OrchestratorLibnetwork, ContainerID: "aaaaaaaaaaaa77", DockerID: "1111", ContainerName: "db"},
		{Workload: "docker-bbbbbbbbbbbb", Orchestrator: api.OrchestratorLibnetwork, ContainerID: "bbbbbbbbbbbb77", DockerID: "2222", ContainerName: "two", Profiles: []string{"netA"}},
		{Workload: "docker-cccccccccccc", Orchestrator: api.OrchestratorLibnetwork, ContainerID: "cccccccccccc77", DockerID: "2222", ContainerName: "two", Profiles: []string{"netB"}},
		// A netns workload's container id is no Docker container's.
		{Workload: "ns1", Orchestrator: api.OrchestratorNetns, ContainerID: "ffff"},
	}}
	withWeb := fakeEngine{ctrs: []docker.Container{{ID: id, Name: "web-1"}, {ID: "ffff", Name: "idle"}, {ID: "1111", Name: "db"}, {ID: "2222", Name: "two"}}}
	dsDown := errors.New("cannot reach the datastore at http://127.0.0.1:1")
	cases := []struct {
		name       string
		eps        fakeEndpoints
		engine     Engine
		openErr    error
		given      string
		wantName   string
		wantErr    string // the error's start; "" for none
		wantUnk    bool   // matches ErrUnknown
		openCalled bool
	}{
		{name: "workload by its name", eps: honest, given: "w0", wantName: "w0"},
		{name: "docker container by another name", eps: honest, engine: withWeb, given: "web-1", wantName: "web", openCalled: true},
		{name: "docker container by id", eps: honest, engine: withWeb, given: id, wantName: "web", openCalled: true},
		{name: "libnetwork container by name", eps: honest, engine: withWeb, given: "db", wantName: "docker-aaaaaaaaaaaa", openCalled: true},
		{name: "libnetwork container by id", eps: honest, engine: withWeb, given: "1111", wantName: "docker-aaaaaaaaaaaa", openCalled: true},
		{name: "libnetwork endpoint by its own name", eps: honest, given: "docker-aaaaaaaaaaaa", wantName: "docker-aaaaaaaaaaaa"},
		{name: "container on two calico networks", eps: honest, engine: withWeb, given: "two", openCalled: true,
			wantErr: `Docker container "two" has 2 endpoints on host h1, one per calico network: docker-bbbbbbbbbbbb (profile netA), docker-cccccccccccc (profile netB); name one of them instead of the container`},
		{name: "datastore does not answer", eps: fakeEndpoints{getErr: dsDown}, given: "w9",
			wantErr: dsDown.Error()},
		{name: "Docker turned off", eps: honest, openErr: ErrDockerOff, given: "w9", openCalled: true, wantUnk: true,
			wantErr: "unknown container \"w9\" on host h1; list them with `calicoctl endpoint show`"},
		{name: "no engine on this host", eps: honest, openErr: fmt.Errorf("%w (no socket at /x.sock)", ErrNoEngine), given: "w9", openCalled: true, wantUnk: true,
			wantErr: `unknown container "w9" on host h1, and this host has no Docker engine (no socket at /x.sock) to ask`},
		{name: "DOCKER_HOST unusable", eps: honest, openErr: errors.New("DOCKER_HOST: docker host \"tcp://x\": only unix sockets"), given: "w9", openCalled: true,
			wantErr: `unknown container "w9" on host h1, and the Docker engine cannot be asked whether it is one of its containers: DOCKER_HOST: docker host "tcp://x"`},
		{name: "engine does not answer", eps: honest, engine: fakeEngine{err: errors.New("cannot reach the Docker engine at /s: connection refused")}, given: "w9", openCalled: true,
			wantErr: `unknown container "w9" on host h1, and the Docker engine could not say whether it is one of its containers: cannot reach the Docker engine at /s`},
		{name: "no such container", eps: honest, engine: withWeb, given: "w9", openCalled: true, wantUnk: true,
			wantErr: `unknown container "w9" on host h1: no workload by that name, and Docker has no container by that name or id`},
		{name: "container without endpoint", eps: honest, engine: withWeb, given: "idle", openCalled: true, wantUnk: true,
			wantErr: "Docker container \"idle\" (id ffff) has no endpoint on host h1; add one with `calicoctl container add idle IP`"},
		{name: "datastore fails listing", eps: fakeEndpoints{eps: honest.eps, listErr: dsDown}, engine: withWeb, given: "idle", openCalled: true,
			wantErr: dsDown.Error()},
	}
	for _, c := range cases {
		opened := false
		open := func() (Engine, error) {
			opened = true
			return c.engine, c.openErr
		}
		name, err := Resolve(context.Background(), c.eps, open, "h1", c.given)
		if opened != c.openCalled {
			t.Errorf("%s: engine opened %v, want %v", c.name, opened, c.openCalled)
		}
		if c.wantErr == "" {
			if err != nil || name != c.wantName {
				t.Errorf("%s: got %q, %v; want %q", c.name, name, err, c.wantName)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.wantErr) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %q, %v; want one line starting %q", c.name, name, err, c.wantErr)
			continue
		}
		if errors.Is(err, ErrUnknown) != c.wantUnk {
			t.Errorf("%s: errors.Is(err, ErrUnknown) = %v, want %v", c.name, !c.wantUnk, c.wantUnk)
		}
	}
}

func TestOpenEngine(t *testing.T) {
	t.Setenv("DOCKER_HOST", "none")
	if _, err := OpenEngine(); !errors.Is(err, ErrDockerOff) {
		t.Errorf("DOCKER_HOST=none: %v", err)
	}
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/docker.sock")
	if _, err := OpenEngine(); !errors.Is(err, ErrNoEngine) || !strings.Contains(err.Error(), "docker.sock") {
		t.Errorf("no socket: %v", err)
	}
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
	if _, err := OpenEngine(); err == nil || errors.Is(err, ErrNoEngine) || !strings.HasPrefix(err.Error(), "DOCKER_HOST: ") {
		t.Errorf("tcp DOCKER_HOST: %v", err)
	}
}
