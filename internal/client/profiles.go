package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/rules"
)

func unknownProfile(name string) error {
	return fmt.Errorf("unknown profile %q; create it with `calicoctl profile add %s` or list them with `calicoctl profile show`", name, name)
}

// Profiles lists every profile by name.
func (c *Client) Profiles(ctx context.Context) ([]api.Profile, error) {
	kvs, err := datastore.List[api.Profile](ctx, c.DS, datastore.PrefixProfiles)
	if err != nil {
		return nil, err
	}
	out := make([]api.Profile, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, kv.Value)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Profile reads one profile.
func (c *Client) Profile(ctx context.Context, name string) (api.Profile, error) {
	if err := api.ValidateName("profile", name); err != nil {
		return api.Profile{}, err
	}
	p, _, err := datastore.Get[api.Profile](ctx, c.DS, datastore.ProfileKey(name))
	if err != nil {
		return p, notFound(err, "%s", unknownProfile(name))
	}
	return p, nil
}

// AddProfile creates a profile with the seed's defaults. ifMissing makes an
// existing profile a success (used when containers name a profile to create).
func (c *Client) AddProfile(ctx context.Context, name string, ifMissing bool) error {
	if err := api.ValidateName("profile", name); err != nil {
		return err
	}
	if ifMissing {
		// Read first: the profile nearly always exists (the CNI plugin
		// and the Docker paths ask on every container), and a read is far
		// cheaper than a create that fails, which etcd commits to disk.
		if _, err := c.Profile(ctx, name); err == nil {
			return nil
		}
	}
	err := c.DS.Create(ctx, datastore.ProfileKey(name), api.NewProfile(name))
	if errors.Is(err, datastore.ErrConflict) {
		if ifMissing {
			return nil
		}
		return fmt.Errorf("profile %q already exists", name)
	}
	return err
}

// RemoveProfile deletes a profile; one still applied to endpoints is refused unless forced.
func (c *Client) RemoveProfile(ctx context.Context, name string, force bool) error {
	if _, err := c.Profile(ctx, name); err != nil {
		return err
	}
	if !force {
		eps, err := c.Endpoints(ctx, "")
		if err != nil {
			return err
		}
		var users []string
		for _, ep := range eps {
			if slices.Contains(ep.Profiles, name) {
				users = append(users, ep.Workload+" on "+ep.Node)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("profile %q is applied to %d endpoint(s) (%s); remove it from them first, or use --force", name, len(users), strings.Join(users, ", "))
		}
	}
	return c.DS.DeleteKey(ctx, datastore.ProfileKey(name), 0)
}

// updateProfile changes a profile with compare-and-swap, validating the result before it is written.
func (c *Client) updateProfile(ctx context.Context, name string, fn func(*api.Profile) error) error {
	if _, err := c.Profile(ctx, name); err != nil {
		return err
	}
	return datastore.Update(ctx, c.DS, datastore.ProfileKey(name), func(p *api.Profile) error {
		if err := fn(p); err != nil {
			return err
		}
		return api.ValidateProfile(*p)
	})
}

// AddTag adds a tag to a profile (a no-op when present).
func (c *Client) AddTag(ctx context.Context, profile, tag string) error {
	if err := api.ValidateName("tag", tag); err != nil {
		return err
	}
	return c.updateProfile(ctx, profile, func(p *api.Profile) error {
		if !slices.Contains(p.Tags, tag) {
			p.Tags = append(p.Tags, tag)
		}
		return nil
	})
}

// RemoveTag removes a tag; an absent tag is an error so typos show.
func (c *Client) RemoveTag(ctx context.Context, profile, tag string) error {
	return c.updateProfile(ctx, profile, func(p *api.Profile) error {
		i := slices.Index(p.Tags, tag)
		if i < 0 {
			return fmt.Errorf("profile %q has no tag %q", profile, tag)
		}
		p.Tags = slices.Delete(p.Tags, i, i+1)
		return nil
	})
}

func ruleList(p *api.Profile, dir string) *[]api.Rule {
	if dir == rules.Inbound {
		return &p.Inbound
	}
	return &p.Outbound
}

// AddRule inserts a rule at position at (1-based), or appends when at is 0.
func (c *Client) AddRule(ctx context.Context, profile, dir string, at int, r api.Rule) error {
	if err := rules.Validate(r); err != nil {
		return err
	}
	return c.updateProfile(ctx, profile, func(p *api.Profile) error {
		list := ruleList(p, dir)
		if at == 0 {
			*list = append(*list, r)
			return nil
		}
		if at < 1 || at > len(*list)+1 {
			return fmt.Errorf("--at=%d is out of range: profile %q has %d %s rule(s)", at, profile, len(*list), dir)
		}
		*list = slices.Insert(*list, at-1, r)
		return nil
	})
}

// RemoveRule removes the rule at position at, or else the first rule equal to r.
func (c *Client) RemoveRule(ctx context.Context, profile, dir string, at int, r *api.Rule) error {
	return c.updateProfile(ctx, profile, func(p *api.Profile) error {
		list := ruleList(p, dir)
		i := at - 1
		if r != nil {
			want := rules.Format(*r)
			i = slices.IndexFunc(*list, func(x api.Rule) bool { return rules.Format(x) == want })
			if i < 0 {
				return fmt.Errorf("profile %q has no %s rule %q", profile, dir, want)
			}
		}
		if i < 0 || i >= len(*list) {
			return fmt.Errorf("--at=%d is out of range: profile %q has %d %s rule(s)", at, profile, len(*list), dir)
		}
		*list = slices.Delete(*list, i, i+1)
		return nil
	})
}

// RulesJSON is the document `rule json` prints and `rule update` reads.
type RulesJSON struct {
	Inbound  []api.Rule `json:"inbound_rules"`
	Outbound []api.Rule `json:"outbound_rules"`
}

// UpdateRules replaces a profile's rules with a RulesJSON document.
func (c *Client) UpdateRules(ctx context.Context, profile string, doc []byte) error {
	var rj RulesJSON
	dec := json.NewDecoder(strings.NewReader(string(doc)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rj); err != nil || dec.More() {
		if err == nil {
			err = fmt.Errorf("unexpected data after the document")
		}
		return fmt.Errorf("rules document is not valid JSON of {\"inbound_rules\": [...], \"outbound_rules\": [...]}: %v", err)
	}
	if rj.Inbound == nil || rj.Outbound == nil {
		return fmt.Errorf("rules document must list both inbound_rules and outbound_rules (use [] for none), so a missing list never wipes rules by accident")
	}
	for _, r := range append(append([]api.Rule{}, rj.Inbound...), rj.Outbound...) {
		if err := rules.Validate(r); err != nil {
			return err
		}
	}
	return c.updateProfile(ctx, profile, func(p *api.Profile) error {
		p.Inbound, p.Outbound = rj.Inbound, rj.Outbound
		return nil
	})
}
