package client

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
)

// CheckUserLabel checks a label a user (or a Docker label) puts on an
// endpoint: Kubernetes' syntax, and never under the prefixes the system
// sets, so no workload can claim another node, orchestrator or profile.
func CheckUserLabel(key, value string) error {
	if api.IsImplicitLabel(key) {
		return fmt.Errorf("label %q: keys under %s and %s are set by calico (node, orchestrator, workload, profiles), not by users; choose another key", key, api.ImplicitLabelPrefix, api.ProfileLabelPrefix)
	}
	return resource.ValidateLabel(key, value)
}

// ParseLabel reads KEY=VALUE (VALUE may be empty) and checks it as
// CheckUserLabel does.
func ParseLabel(s string) (key, value string, err error) {
	key, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q: write KEY=VALUE (KEY= for an empty value)", s)
	}
	if err := CheckUserLabel(key, value); err != nil {
		return "", "", err
	}
	return key, value, nil
}

// ParseLabels reads several KEY=VALUE; a key given twice is an error.
func ParseLabels(args []string) (map[string]string, error) {
	out := make(map[string]string, len(args))
	for _, a := range args {
		k, v, err := ParseLabel(a)
		if err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// LabelChange is what SetLabels did to one key.
type LabelChange struct {
	Key, Value string
	Old        *string // the value before; nil when the key was new
}

// SetLabels sets labels on a workload's endpoint, replacing the values of
// keys it has. The record is rewritten by compare-and-swap: a concurrent
// change makes it re-read and re-apply, never overwrite.
func (c *Client) SetLabels(ctx context.Context, node, name string, labels map[string]string) ([]LabelChange, error) {
	for k, v := range labels {
		if err := CheckUserLabel(k, v); err != nil {
			return nil, err
		}
	}
	var changes []LabelChange
	err := c.updateEndpoint(ctx, node, name, func(e *api.Endpoint) error {
		changes = changes[:0]
		if e.Labels == nil {
			e.Labels = map[string]string{}
		}
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			ch := LabelChange{Key: k, Value: labels[k]}
			if old, ok := e.Labels[k]; ok {
				ch.Old = &old
			}
			e.Labels[k] = labels[k]
			changes = append(changes, ch)
		}
		return nil
	})
	return changes, err
}

// RemoveLabels takes labels off a workload's endpoint. A key it does not
// have is an error (so typos show) and nothing is removed; implicit labels
// are not the user's to remove.
func (c *Client) RemoveLabels(ctx context.Context, node, name string, keys []string) error {
	for _, k := range keys {
		if api.IsImplicitLabel(k) {
			return fmt.Errorf("label %q is set by calico and cannot be removed (it follows the endpoint's node, orchestrator, name and profiles)", k)
		}
	}
	return c.updateEndpoint(ctx, node, name, func(e *api.Endpoint) error {
		for _, k := range keys {
			if _, ok := e.Labels[k]; !ok {
				return fmt.Errorf("container %q has no label %q; see `calicoctl container %s label show`", name, k, name)
			}
			delete(e.Labels, k)
		}
		if len(e.Labels) == 0 {
			e.Labels = nil
		}
		return nil
	})
}

// updateEndpoint changes a workload's endpoint record by compare-and-swap
// (datastore.Update re-reads and re-applies fn on a conflict); an unknown
// workload is the usual "unknown container" error.
func (c *Client) updateEndpoint(ctx context.Context, node, name string, fn func(*api.Endpoint) error) error {
	if _, _, err := c.Endpoint(ctx, node, name); err != nil {
		return err
	}
	err := datastore.Update(ctx, c.DS, datastore.EndpointKey(node, name), fn)
	return notFound(err, "container %q on host %s was removed meanwhile", name, node)
}

// ForeignLabels merges labels that come from outside (a Docker network's,
// then its container's: later sources win on a clash) into endpoint
// labels. One that CheckUserLabel refuses is skipped and returned as an
// error naming it: a workload is never refused for a label.
func ForeignLabels(sources ...map[string]string) (map[string]string, []error) {
	var out map[string]string
	var skipped []error
	for _, src := range sources {
		for _, k := range slices.Sorted(maps.Keys(src)) {
			if err := CheckUserLabel(k, src[k]); err != nil {
				skipped = append(skipped, err)
				continue
			}
			if out == nil {
				out = map[string]string{}
			}
			out[k] = src[k]
		}
	}
	return out, skipped
}
