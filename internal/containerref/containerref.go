// Package containerref is what the NAME of `calicoctl container NAME ...`
// refers to: the workload of that name on this host, else the Docker
// container of that name or id, whose endpoint may be named otherwise
// (`container add` keeps the name the user gave, a name or an id).
//
// Each way the answer can fail is its own error: Docker turned off, no
// engine on this host, a DOCKER_HOST we cannot use, an engine that does not
// answer, a datastore that does not answer, no such container, and a
// container that has no endpoint here. Only the ones that mean "nothing on
// this host is called that" match ErrUnknown.
package containerref

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/docker"
	"github.com/calico-go/calico/internal/docker/dockerwatch"
)

// ErrUnknown is matched by the errors that say this host has no workload
// by the given name and Docker knows of none either (or is not here to
// ask). `container remove` still cleans what an interrupted add of that
// name left.
var ErrUnknown = errors.New("unknown container")

// ErrDockerOff is returned by OpenEngine for DOCKER_HOST=none.
var ErrDockerOff = errors.New("the Docker integration is off (DOCKER_HOST=none)")

// ErrNoEngine is matched by OpenEngine's error when this host has no
// engine socket.
var ErrNoEngine = errors.New("this host has no Docker engine")

type unknown string

func (u unknown) Error() string { return string(u) }
func (u unknown) Unwrap() error { return ErrUnknown }

// Endpoints is the part of client.Client that Resolve reads.
type Endpoints interface {
	Endpoint(ctx context.Context, node, name string) (api.Endpoint, int64, error)
	Endpoints(ctx context.Context, node string) ([]api.Endpoint, error)
}

// Engine is the part of docker.Engine that Resolve asks.
type Engine interface {
	Lookup(ctx context.Context, nameOrID string) (docker.Container, error)
}

// OpenEngine is this host's engine as DOCKER_HOST names it (a unix socket,
// /var/run/docker.sock by default). It fails with ErrDockerOff, an error
// matching ErrNoEngine, or one naming a DOCKER_HOST we cannot use.
func OpenEngine() (*docker.Engine, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "none" {
		return nil, ErrDockerOff
	}
	sock, err := docker.SocketFromHost(host)
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST: %w", err)
	}
	if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no socket at %s)", ErrNoEngine, sock)
	}
	return docker.NewEngineAt(sock), nil
}

// Resolve returns the name of the workload on node that given refers to.
// open is called only when given is not a workload's name.
func Resolve(ctx context.Context, eps Endpoints, open func() (Engine, error), node, given string) (string, error) {
	_, _, err := eps.Endpoint(ctx, node, given)
	if err == nil {
		return given, nil
	} else if !errors.Is(err, datastore.ErrNotFound) {
		return "", err
	}
	missing := fmt.Sprintf("unknown container %q on host %s", given, node)
	const list = "list them with `calicoctl endpoint show`"
	engine, err := open()
	switch {
	case errors.Is(err, ErrDockerOff):
		return "", unknown(missing + "; " + list)
	case errors.Is(err, ErrNoEngine):
		return "", unknown(fmt.Sprintf("%s, and %v to ask; %s", missing, err, list))
	case err != nil:
		return "", fmt.Errorf("%s, and the Docker engine cannot be asked whether it is one of its containers: %v", missing, err)
	}
	ctr, err := engine.Lookup(ctx, given)
	if errors.Is(err, docker.ErrNoSuchContainer) {
		return "", unknown(fmt.Sprintf("%s: no workload by that name, and Docker has no container by that name or id; %s", missing, list))
	} else if err != nil {
		return "", fmt.Errorf("%s, and the Docker engine could not say whether it is one of its containers: %v", missing, err)
	}
	all, err := eps.Endpoints(ctx, node)
	if err != nil {
		return "", err
	}
	// A container on several calico networks (libnetwork) has one
	// endpoint per network: the user must say which.
	var mine []api.Endpoint
	for _, ep := range all {
		if id, _ := ep.DockerContainer(); id == ctr.ID {
			mine = append(mine, ep)
		}
	}
	switch len(mine) {
	case 1:
		return mine[0].Workload, nil
	case 0:
	default:
		var names []string
		for _, ep := range mine {
			names = append(names, fmt.Sprintf("%s (profile %s)", ep.Workload, strings.Join(ep.Profiles, ",")))
		}
		return "", fmt.Errorf("Docker container %q has %d endpoints on host %s, one per calico network: %s; name one of them instead of the container", given, len(mine), node, strings.Join(names, ", "))
	}
	return "", unknown(fmt.Sprintf("Docker container %q (id %.12s) has no endpoint on host %s; add one with `calicoctl container add %s IP`", given, ctr.ID, node, given))
}

// DockerRequest is `container add NAME IP...` for a running Docker
// container: the request the Docker watcher would make for it (with the
// Docker labels it skipped), under the name the user gave (a name or an
// id, which the other container commands then accept), on iface when one
// is given.
func DockerRequest(ctx context.Context, c *client.Client, node, given string, ips, profiles []string, iface string) (client.WorkloadRequest, []error, error) {
	engine, err := OpenEngine()
	if errors.Is(err, ErrDockerOff) || errors.Is(err, ErrNoEngine) {
		return client.WorkloadRequest{}, nil, fmt.Errorf("container %q: without --netns PATH it must be a Docker container, and %v", given, err)
	} else if err != nil {
		return client.WorkloadRequest{}, nil, err
	}
	ctr, err := engine.Inspect(ctx, given)
	if err != nil {
		return client.WorkloadRequest{}, nil, err
	}
	req, skipped, err := dockerwatch.Request(ctx, c, engine, node, ctr, ips, profiles)
	if err != nil {
		return req, skipped, err
	}
	req.Name = given
	if iface != "" {
		req.Interface = iface
	}
	return req, skipped, nil
}
