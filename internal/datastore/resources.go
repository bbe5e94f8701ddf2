package datastore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/resource"
)

// The v3 resources (GlobalNetworkPolicy, GlobalNetworkSet) are stored as
// their own JSON at PolicyKey and NetworkSetKey. Three metadata fields are
// the datastore's, whatever a file says: ResourceVersion is the key's mod
// revision (filled on every read, never stored), and CreationTimestamp and
// UID are stamped when a resource is created; an update writes what the
// caller gives, so callers carry them over from what they read.

// MaxResourceChanges is how many resources one CommitResources may change:
// etcd's default limit of operations in one transaction (--max-txn-ops),
// which a changed server may lower but rarely does. Staying under it keeps
// a file all-or-nothing on any etcd.
const MaxResourceChanges = 128

// ResourceRef names a resource: kinds are cluster-wide, so a kind and a
// name are a unique key.
type ResourceRef struct{ Kind, Name string }

func (r ResourceRef) String() string { return r.Kind + " " + strconv.Quote(r.Name) }

// RefOf names r.
func RefOf(r resource.Resource) ResourceRef { return ResourceRef{r.GetKind(), r.GetName()} }

// ResourceKey is where a resource is stored.
func ResourceKey(ref ResourceRef) (string, error) {
	switch ref.Kind {
	case resource.KindGlobalNetworkPolicy:
		return PolicyKey(ref.Name), nil
	case resource.KindGlobalNetworkSet:
		return NetworkSetKey(ref.Name), nil
	}
	return "", fmt.Errorf("unknown resource kind %q: want %s or %s", ref.Kind, resource.KindGlobalNetworkPolicy, resource.KindGlobalNetworkSet)
}

// IsResourceKey says whether key is a v3 resource's key (by prefix).
func IsResourceKey(key string) bool {
	return strings.HasPrefix(key, PrefixPolicies) || strings.HasPrefix(key, PrefixNetworkSets)
}

// DecodeResource reads a stored record exactly as resource.Decode reads a
// file (strict fields, every value validated) and checks that it is one
// document of the kind and name its key says. Records reach etcd from
// anyone with write access, so readers here and the agent believe nothing
// else. ResourceVersion is left as stored; callers set it from the revision.
func DecodeResource(key string, value []byte) (resource.Resource, error) {
	var want ResourceRef
	switch {
	case strings.HasPrefix(key, PrefixPolicies):
		want = ResourceRef{resource.KindGlobalNetworkPolicy, key[len(PrefixPolicies):]}
	case strings.HasPrefix(key, PrefixNetworkSets):
		want = ResourceRef{resource.KindGlobalNetworkSet, key[len(PrefixNetworkSets):]}
	default:
		return nil, fmt.Errorf("%s is not a resource key", key)
	}
	// A JSON object, as this package writes: YAML could hide several
	// documents, and the library reads an empty value as no document.
	if t := bytes.TrimSpace(value); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	// And JSON only: a YAML flow mapping starts with "{" too, and may
	// carry anchors and aliases, which every agent's decoder would expand
	// (a 43 KB record into a policy of 16 million nets); JSON has none.
	// json.Valid also stops at 10000 levels, where the YAML parser spent
	// a minute over 100000 before refusing them.
	if !json.Valid(value) {
		return nil, errors.New("not one JSON object: YAML (anchors, aliases), several documents and nesting over 10000 levels are refused")
	}
	rs, err := resource.Decode(value)
	if err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if len(rs) != 1 {
		return nil, fmt.Errorf("holds %d documents, not one", len(rs))
	}
	if got := RefOf(rs[0]); got != want {
		return nil, fmt.Errorf("%s is stored under %s", got, key)
	}
	return rs[0], nil
}

// readResource decodes a record read at rev and sets its ResourceVersion.
func readResource(key string, value []byte, rev int64) (resource.Resource, error) {
	r, err := DecodeResource(key, value)
	if err != nil {
		return nil, fmt.Errorf("datastore record %s is not valid: %w", key, err)
	}
	r.GetMetadata().ResourceVersion = strconv.FormatInt(rev, 10)
	return r, nil
}

// StoredResource is one record of ReadResources: the resource, or why the
// record under its key is not a valid one, and the key's revision.
type StoredResource struct {
	Res resource.Resource // nil when Err is set
	Rev int64
	Err error
}

// ReadResources reads every policy and network set at one revision, by
// reference: valid records with their ResourceVersion set, and records
// that are not valid with the reason (by the reference their key names),
// so a writer can refuse to create over them or replace them knowingly.
func (c *Client) ReadResources(ctx context.Context) (map[ResourceRef]StoredResource, error) {
	recs, _, err := c.Read(ctx, ReadPrefix(PrefixPolicies), ReadPrefix(PrefixNetworkSets))
	if err != nil {
		return nil, err
	}
	kinds := []string{resource.KindGlobalNetworkPolicy, resource.KindGlobalNetworkSet}
	prefixes := []string{PrefixPolicies, PrefixNetworkSets}
	out := map[ResourceRef]StoredResource{}
	for i, list := range recs {
		for _, rec := range list {
			r, err := readResource(rec.Key, rec.Value, rec.Rev)
			ref := ResourceRef{kinds[i], strings.TrimPrefix(rec.Key, prefixes[i])}
			out[ref] = StoredResource{Res: r, Rev: rec.Rev, Err: err}
		}
	}
	return out, nil
}

// ChangeOp is what a ResourceChange does.
type ChangeOp int

const (
	// OpCreate writes a resource that must not exist; it stamps
	// CreationTimestamp and UID.
	OpCreate ChangeOp = iota + 1
	// OpUpdate overwrites a resource that must still be at the
	// ResourceVersion it carries.
	OpUpdate
	// OpDelete removes a resource that must still be at the
	// ResourceVersion it carries (only its kind, name and version count).
	OpDelete
)

// ResourceChange is one write of CommitResources.
type ResourceChange struct {
	Op  ChangeOp
	Res resource.Resource
}

// CommitResources makes every change in one transaction, or none: it
// returns ErrConflict, with nothing written, when a resource to create
// exists or one to update or delete is no longer at its ResourceVersion.
// On success the created and updated resources carry their new
// ResourceVersion (and a created one its UID and CreationTimestamp).
func (c *Client) CommitResources(ctx context.Context, changes []ResourceChange) error {
	if len(changes) > MaxResourceChanges {
		return fmt.Errorf("%d resources in one change: the datastore takes at most %d in one transaction; split the file", len(changes), MaxResourceChanges)
	}
	guards := make([]Guard, 0, len(changes))
	writes := make([]Write, 0, len(changes))
	seen := map[string]bool{}
	now := time.Now().UTC().Format(time.RFC3339)
	for _, ch := range changes {
		key, err := ResourceKey(RefOf(ch.Res))
		if err != nil {
			return err
		}
		if seen[key] {
			// etcd refuses a transaction that writes a key twice.
			return fmt.Errorf("%s is changed twice in one transaction", RefOf(ch.Res))
		}
		seen[key] = true
		meta := ch.Res.GetMetadata()
		var rev int64
		if ch.Op != OpCreate {
			if rev, err = strconv.ParseInt(meta.ResourceVersion, 10, 64); err != nil || rev <= 0 {
				return fmt.Errorf("%s: resourceVersion %q is not a revision read from the datastore", RefOf(ch.Res), meta.ResourceVersion)
			}
		}
		switch ch.Op {
		case OpCreate:
			meta.CreationTimestamp, meta.UID = now, newUID()
			guards = append(guards, Unchanged(key, 0))
		case OpUpdate:
			guards = append(guards, Unchanged(key, rev))
		case OpDelete:
			guards = append(guards, Unchanged(key, rev))
			writes = append(writes, WriteDelete(key))
			continue
		default:
			return fmt.Errorf("%s: unknown change %d", RefOf(ch.Res), ch.Op)
		}
		raw, err := encodeResource(ch.Res)
		if err != nil {
			return err
		}
		writes = append(writes, WriteValue(key, raw))
	}
	ok, rev, err := c.commit(ctx, guards, writes)
	if err != nil {
		return err
	}
	if !ok {
		return ErrConflict
	}
	for _, ch := range changes {
		if ch.Op != OpDelete {
			ch.Res.GetMetadata().ResourceVersion = strconv.FormatInt(rev, 10)
		}
	}
	return nil
}

// encodeResource is the stored form: the resource's JSON without its
// ResourceVersion (the key's revision says that), and without HTML
// escaping so selectors stay readable in etcd ("a && b", not "\u0026").
func encodeResource(r resource.Resource) (string, error) {
	meta := r.GetMetadata()
	rv := meta.ResourceVersion
	meta.ResourceVersion = ""
	defer func() { meta.ResourceVersion = rv }()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return "", fmt.Errorf("%s: %w", RefOf(r), err)
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// newUID is a random (version 4) UUID, as Kubernetes gives objects.
func newUID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// The typed operations below are the single-resource forms of the above,
// one set per kind.

// resourcePtr is a resource type's pointer (*GlobalNetworkPolicy).
type resourcePtr[T any] interface {
	*T
	resource.Resource
}

func getResource[T any, P resourcePtr[T]](ctx context.Context, c *Client, name string) (T, error) {
	var zero T
	key, err := ResourceKey(ResourceRef{P(&zero).GetKind(), name})
	if err != nil {
		return zero, err
	}
	raw, rev, err := c.GetRaw(ctx, key)
	if err != nil {
		return zero, err
	}
	r, err := readResource(key, raw, rev)
	if err != nil {
		return zero, err
	}
	return *r.(P), nil
}

func listResources[T any, P resourcePtr[T]](ctx context.Context, c *Client) ([]T, error) {
	all, err := c.ReadResources(ctx)
	if err != nil {
		return nil, err
	}
	var zero T
	kind := P(&zero).GetKind()
	var out []T
	var bad []string
	for ref, st := range all {
		if ref.Kind != kind {
			continue
		}
		if st.Err != nil {
			bad = append(bad, st.Err.Error())
			continue
		}
		out = append(out, *st.Res.(P))
	}
	if len(bad) > 0 {
		// As List: one bad record must not hide the others.
		slices.Sort(bad)
		c.log.Warn("skipped datastore records that are not valid resources", "count", len(bad), "problems", strings.Join(bad, " | "))
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(P(&a).GetName(), P(&b).GetName()) })
	return out, nil
}

func changeResource[T any, P resourcePtr[T]](ctx context.Context, c *Client, op ChangeOp, v T) (T, error) {
	if err := c.CommitResources(ctx, []ResourceChange{{op, P(&v)}}); err != nil {
		return v, err
	}
	return v, nil
}

// deleteResource removes a resource: at resourceVersion when one is given,
// else whatever is there. ErrNotFound when it does not exist, ErrConflict
// when it is no longer at resourceVersion.
func deleteResource(ctx context.Context, c *Client, ref ResourceRef, resourceVersion string) error {
	key, err := ResourceKey(ref)
	if err != nil {
		return err
	}
	g := Guard{key: key, exists: true}
	if resourceVersion != "" {
		rev, err := strconv.ParseInt(resourceVersion, 10, 64)
		if err != nil || rev <= 0 {
			return fmt.Errorf("%s: resourceVersion %q is not a revision read from the datastore", ref, resourceVersion)
		}
		g = Unchanged(key, rev)
	}
	ok, err := c.Commit(ctx, []Guard{g}, []Write{WriteDelete(key)})
	if err != nil || ok {
		return err
	}
	if _, _, err := c.GetRaw(ctx, key); err != nil {
		return err // ErrNotFound, or the datastore did not answer
	}
	return ErrConflict
}

// GetPolicy reads one GlobalNetworkPolicy; ErrNotFound when absent.
func GetPolicy(ctx context.Context, c *Client, name string) (resource.GlobalNetworkPolicy, error) {
	return getResource[resource.GlobalNetworkPolicy](ctx, c, name)
}

// ListPolicies reads every GlobalNetworkPolicy, by name.
func ListPolicies(ctx context.Context, c *Client) ([]resource.GlobalNetworkPolicy, error) {
	return listResources[resource.GlobalNetworkPolicy](ctx, c)
}

// CreatePolicy writes a new GlobalNetworkPolicy; ErrConflict if it exists.
func CreatePolicy(ctx context.Context, c *Client, p resource.GlobalNetworkPolicy) (resource.GlobalNetworkPolicy, error) {
	return changeResource(ctx, c, OpCreate, p)
}

// UpdatePolicy overwrites a GlobalNetworkPolicy still at its
// ResourceVersion; ErrConflict otherwise.
func UpdatePolicy(ctx context.Context, c *Client, p resource.GlobalNetworkPolicy) (resource.GlobalNetworkPolicy, error) {
	return changeResource(ctx, c, OpUpdate, p)
}

// DeletePolicy removes a GlobalNetworkPolicy (at resourceVersion, if not "").
func DeletePolicy(ctx context.Context, c *Client, name, resourceVersion string) error {
	return deleteResource(ctx, c, ResourceRef{resource.KindGlobalNetworkPolicy, name}, resourceVersion)
}

// GetNetworkSet reads one GlobalNetworkSet; ErrNotFound when absent.
func GetNetworkSet(ctx context.Context, c *Client, name string) (resource.GlobalNetworkSet, error) {
	return getResource[resource.GlobalNetworkSet](ctx, c, name)
}

// ListNetworkSets reads every GlobalNetworkSet, by name.
func ListNetworkSets(ctx context.Context, c *Client) ([]resource.GlobalNetworkSet, error) {
	return listResources[resource.GlobalNetworkSet](ctx, c)
}

// CreateNetworkSet writes a new GlobalNetworkSet; ErrConflict if it exists.
func CreateNetworkSet(ctx context.Context, c *Client, s resource.GlobalNetworkSet) (resource.GlobalNetworkSet, error) {
	return changeResource(ctx, c, OpCreate, s)
}

// UpdateNetworkSet overwrites a GlobalNetworkSet still at its
// ResourceVersion; ErrConflict otherwise.
func UpdateNetworkSet(ctx context.Context, c *Client, s resource.GlobalNetworkSet) (resource.GlobalNetworkSet, error) {
	return changeResource(ctx, c, OpUpdate, s)
}

// DeleteNetworkSet removes a GlobalNetworkSet (at resourceVersion, if not "").
func DeleteNetworkSet(ctx context.Context, c *Client, name, resourceVersion string) error {
	return deleteResource(ctx, c, ResourceRef{resource.KindGlobalNetworkSet, name}, resourceVersion)
}
