package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
)

// The v3 resources (GlobalNetworkPolicy, GlobalNetworkSet) are changed a
// file at a time: every document is decoded and validated, then every
// document is checked against what is stored (one read, one revision),
// then every change is written in one transaction guarded on that read. A
// file with one bad document, or one resource that cannot be changed as
// asked, changes nothing.

// Outcome is what happened to one resource.
type Outcome string

const (
	Created   Outcome = "created"
	Updated   Outcome = "updated"
	Unchanged Outcome = "unchanged"
	Deleted   Outcome = "deleted"
	// Absent: a delete with skipMissing found nothing to delete.
	Absent Outcome = "not found, skipped"
)

// Result is the outcome for one resource of a file.
type Result struct {
	Kind, Name string
	Outcome    Outcome
}

// Verb is a file operation.
type Verb int

const (
	Apply   Verb = iota + 1 // create, or update when different
	Create                  // must not exist
	Replace                 // must exist
	Delete                  // must exist, unless skipMissing
)

// DecodeFile reads the resources of a file (name "-" is standard input),
// turning the decoder's errors into one line: "FILE:LINE:COLUMN: FIELD:
// problem", the first few problems of the file joined with "; ".
func DecodeFile(name string, data []byte) ([]resource.Resource, error) {
	if name == "-" {
		name = "<stdin>"
	}
	rs, err := resource.Decode(data)
	if err == nil {
		return rs, nil
	}
	var parts []string
	for _, e := range flatten(err) {
		var re *resource.Error
		if !errors.As(e, &re) {
			parts = append(parts, fmt.Sprintf("%s: %v", name, e))
			continue
		}
		where := fmt.Sprintf("%s: document %d", name, re.Doc)
		if re.Line > 0 {
			where = fmt.Sprintf("%s:%d:%d", name, re.Line, re.Column)
		}
		if re.Field != "" {
			where += ": " + re.Field
		}
		parts = append(parts, where+": "+re.Msg)
	}
	const shown = 3
	msg := strings.Join(parts[:min(shown, len(parts))], "; ")
	if len(parts) > shown {
		msg += fmt.Sprintf("; and %d more problem(s)", len(parts)-shown)
	}
	return nil, errors.New(msg + "; nothing was written")
}

// ReadFile reads a file, or stdin for "-", bounded by the decoder's limit.
func ReadFile(name string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, resource.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > resource.MaxBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes; split it", name, resource.MaxBytes)
	}
	return data, nil
}

// flatten lists the errors of an errors.Join, recursively.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// concurrentRetries bounds how often a file is re-planned because another
// writer changed a resource between our read and our write.
const concurrentRetries = 5

// ChangeResources performs verb on every resource of a file, all or
// nothing. skipMissing makes Delete pass over resources that do not exist.
func (c *Client) ChangeResources(ctx context.Context, verb Verb, rs []resource.Resource, skipMissing bool) ([]Result, error) {
	for attempt := 0; attempt < concurrentRetries; attempt++ {
		stored, err := c.DS.ReadResources(ctx)
		if err != nil {
			return nil, err
		}
		changes, results, err := plan(verb, rs, stored, skipMissing)
		if err != nil {
			return nil, err
		}
		if len(changes) == 0 {
			return results, nil
		}
		err = c.DS.CommitResources(ctx, changes)
		if errors.Is(err, datastore.ErrConflict) {
			continue // another writer got in between: plan again on what it wrote
		}
		if err != nil {
			return nil, err
		}
		return results, nil
	}
	return nil, errors.New("the resources kept changing while this file was being written; nothing was written, try again")
}

// plan decides, from what is stored, the change for every resource of a
// file and its outcome; any resource that cannot be changed as asked makes
// it refuse the whole file, naming every such resource. It never changes rs.
func plan(verb Verb, rs []resource.Resource, stored map[datastore.ResourceRef]datastore.StoredResource, skipMissing bool) ([]datastore.ResourceChange, []Result, error) {
	var changes []datastore.ResourceChange
	var results []Result
	var refused []string
	for _, r := range rs {
		ref := datastore.RefOf(r)
		cur, exists := stored[ref]
		given := r.GetMetadata().ResourceVersion
		refuse := func(format string, args ...any) {
			refused = append(refused, ref.String()+" "+fmt.Sprintf(format, args...))
		}
		// A resourceVersion in the file is the revision it was read at:
		// the change is for that revision only, as Calico does.
		stale := func() bool {
			if given != "" && given != strconv.FormatInt(cur.Rev, 10) {
				refuse("was changed since resourceVersion %s was read (it is at %d now); get it again and edit that", given, cur.Rev)
				return true
			}
			return false
		}
		if given != "" {
			if n, err := strconv.ParseInt(given, 10, 64); err != nil || n <= 0 {
				refuse("has metadata.resourceVersion %q, which is not a datastore revision; remove it", given)
				continue
			}
		}
		outcome := Unchanged
		switch verb {
		case Delete:
			if !exists {
				if skipMissing {
					results = append(results, Result{ref.Kind, ref.Name, Absent})
					continue
				}
				refuse("does not exist")
				continue
			}
			if stale() {
				continue
			}
			changes = append(changes, datastore.ResourceChange{Op: datastore.OpDelete, Res: withVersion(r, cur.Rev)})
			outcome = Deleted
		case Create, Apply, Replace:
			switch {
			case !exists && verb == Replace:
				refuse("does not exist; create it with `calicoctl create` or `calicoctl apply`")
				continue
			case !exists:
				changes = append(changes, datastore.ResourceChange{Op: datastore.OpCreate, Res: clone(r)})
				outcome = Created
			case verb == Create && cur.Err != nil:
				refuse("already exists, as a record that is not valid (%v); replace it with `calicoctl apply` or `calicoctl replace`", cur.Err)
				continue
			case verb == Create:
				refuse("already exists; change it with `calicoctl apply` or `calicoctl replace`")
				continue
			case cur.Err == nil && sameContent(cur.Res, r):
				// Nothing to write, whatever resourceVersion the file
				// carries: applying a file twice changes nothing.
			default:
				if stale() {
					continue
				}
				next := withVersion(r, cur.Rev)
				if cur.Err == nil {
					// The datastore's metadata stays; a file's is ignored.
					m, was := next.GetMetadata(), cur.Res.GetMetadata()
					m.UID, m.CreationTimestamp = was.UID, was.CreationTimestamp
				}
				changes = append(changes, datastore.ResourceChange{Op: datastore.OpUpdate, Res: next})
				outcome = Updated
			}
		}
		results = append(results, Result{ref.Kind, ref.Name, outcome})
	}
	if len(refused) > 0 {
		return nil, nil, fmt.Errorf("nothing was written: %s", strings.Join(refused, "; "))
	}
	return changes, results, nil
}

// clone copies a resource so the datastore can stamp it without changing
// the caller's (a retry plans again from the file as it was read).
func clone(r resource.Resource) resource.Resource {
	switch v := r.(type) {
	case *resource.GlobalNetworkPolicy:
		c := *v
		return &c
	case *resource.GlobalNetworkSet:
		c := *v
		return &c
	}
	panic(fmt.Sprintf("client: unknown resource type %T", r))
}

// withVersion is a copy of r at revision rev.
func withVersion(r resource.Resource, rev int64) resource.Resource {
	c := clone(r)
	c.GetMetadata().ResourceVersion = strconv.FormatInt(rev, 10)
	return c
}

// sameContent compares what a user writes (labels and spec), not what the
// datastore keeps (revision, creation time, UID).
func sameContent(a, b resource.Resource) bool {
	return a.GetKind() == b.GetKind() && bytes.Equal(content(a), content(b))
}

func content(r resource.Resource) []byte {
	c := clone(r)
	m := c.GetMetadata()
	*m = resource.ObjectMeta{Name: m.Name, Labels: m.Labels}
	b, _ := json.Marshal(c) // the resource types always marshal
	return b
}

// kinds maps the names `calicoctl get` and `delete` accept to kinds.
var kinds = map[string]string{
	"globalnetworkpolicy":   resource.KindGlobalNetworkPolicy,
	"globalnetworkpolicies": resource.KindGlobalNetworkPolicy,
	"gnp":                   resource.KindGlobalNetworkPolicy,
	"globalnetworkset":      resource.KindGlobalNetworkSet,
	"globalnetworksets":     resource.KindGlobalNetworkSet,
	"gns":                   resource.KindGlobalNetworkSet,
	"profile":               KindProfile,
	"profiles":              KindProfile,
	"pro":                   KindProfile,
}

// KindProfile is the seed's profile, listed beside the v3 kinds.
const KindProfile = "Profile"

// ParseKind reads a resource type as a command line names it: the kind,
// its plural or its short name, in any case.
func ParseKind(s string) (string, error) {
	if k, ok := kinds[strings.ToLower(s)]; ok {
		return k, nil
	}
	return "", fmt.Errorf("unknown resource type %q: want globalnetworkpolicy (gnp), globalnetworkset (gns) or profile", s)
}

func resourceNotFound(ref datastore.ResourceRef) error {
	plural := map[string]string{resource.KindGlobalNetworkPolicy: "globalnetworkpolicies", resource.KindGlobalNetworkSet: "globalnetworksets"}
	return missing(fmt.Sprintf("%s not found; list them with `calicoctl get %s`", ref, plural[ref.Kind]))
}

// GetResources lists the resources of a kind by name, or reads one when
// name is given.
func (c *Client) GetResources(ctx context.Context, kind, name string) ([]resource.Resource, error) {
	ref := datastore.ResourceRef{Kind: kind, Name: name}
	if name != "" {
		if err := resource.ValidateName(name); err != nil {
			return nil, fmt.Errorf("%s name: %v", kind, err)
		}
		var r resource.Resource
		var err error
		switch kind {
		case resource.KindGlobalNetworkPolicy:
			var p resource.GlobalNetworkPolicy
			p, err = datastore.GetPolicy(ctx, c.DS, name)
			r = &p
		case resource.KindGlobalNetworkSet:
			var s resource.GlobalNetworkSet
			s, err = datastore.GetNetworkSet(ctx, c.DS, name)
			r = &s
		default:
			_, err = datastore.ResourceKey(ref)
		}
		if err != nil {
			if errors.Is(err, datastore.ErrNotFound) {
				return nil, resourceNotFound(ref)
			}
			return nil, err
		}
		return []resource.Resource{r}, nil
	}
	var out []resource.Resource
	switch kind {
	case resource.KindGlobalNetworkPolicy:
		ps, err := datastore.ListPolicies(ctx, c.DS)
		if err != nil {
			return nil, err
		}
		for i := range ps {
			out = append(out, &ps[i])
		}
	case resource.KindGlobalNetworkSet:
		ss, err := datastore.ListNetworkSets(ctx, c.DS)
		if err != nil {
			return nil, err
		}
		for i := range ss {
			out = append(out, &ss[i])
		}
	default:
		_, err := datastore.ResourceKey(ref)
		return nil, err
	}
	return out, nil
}

// DeleteResource deletes one resource by kind and name.
func (c *Client) DeleteResource(ctx context.Context, kind, name string) error {
	if err := resource.ValidateName(name); err != nil {
		return fmt.Errorf("%s name: %v", kind, err)
	}
	ref := datastore.ResourceRef{Kind: kind, Name: name}
	var err error
	switch kind {
	case resource.KindGlobalNetworkPolicy:
		err = datastore.DeletePolicy(ctx, c.DS, name, "")
	case resource.KindGlobalNetworkSet:
		err = datastore.DeleteNetworkSet(ctx, c.DS, name, "")
	default:
		_, err = datastore.ResourceKey(ref)
	}
	if errors.Is(err, datastore.ErrNotFound) {
		return resourceNotFound(ref)
	}
	return err
}
