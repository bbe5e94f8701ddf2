package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdtest"
	"github.com/calico-go/calico/internal/resource"
)

func policy(t *testing.T, doc string) resource.GlobalNetworkPolicy {
	t.Helper()
	rs, err := resource.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return *rs[0].(*resource.GlobalNetworkPolicy)
}

const webPolicy = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: web}
spec:
  selector: app == 'web' && tier in {'a', 'b'}
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, "8000:8080"]}}]
`

// TestResourceTypedOps: create stamps UID, time and revision; get returns
// what was written with the key's revision; update needs the revision it
// read; delete at a stale revision is refused; nothing leaks etcd types.
func TestResourceTypedOps(t *testing.T) {
	ds, url := connect(t)
	ctx := context.Background()

	p, err := datastore.CreatePolicy(ctx, ds, policy(t, webPolicy))
	if err != nil {
		t.Fatal(err)
	}
	uidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	if !uidRE.MatchString(p.Metadata.UID) || p.Metadata.CreationTimestamp == "" || p.Metadata.ResourceVersion == "" {
		t.Fatalf("create did not stamp metadata: %+v", p.Metadata)
	}
	if _, err := datastore.CreatePolicy(ctx, ds, policy(t, webPolicy)); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("second create: %v, want ErrConflict", err)
	}

	got, err := datastore.GetPolicy(ctx, ds, "web")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Metadata, p.Metadata) || got.Spec.Selector != p.Spec.Selector || len(got.Spec.Ingress) != 1 {
		t.Fatalf("get = %+v, want %+v", got, p)
	}

	// The stored value: no resourceVersion, selectors not HTML-escaped.
	raw := rawGet(t, url, datastore.PolicyKey("web"))
	if strings.Contains(raw, "resourceVersion") || !strings.Contains(raw, "app == 'web' && tier") {
		t.Errorf("stored value %s", raw)
	}

	stale := got
	got.Spec.Selector = "app == 'api'"
	upd, err := datastore.UpdatePolicy(ctx, ds, got)
	if err != nil {
		t.Fatal(err)
	}
	if upd.Metadata.ResourceVersion == stale.Metadata.ResourceVersion || upd.Metadata.UID != p.Metadata.UID {
		t.Errorf("update metadata %+v (was %+v)", upd.Metadata, stale.Metadata)
	}
	if _, err := datastore.UpdatePolicy(ctx, ds, stale); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("update at a stale revision: %v, want ErrConflict", err)
	}
	stale.Metadata.ResourceVersion = ""
	if _, err := datastore.UpdatePolicy(ctx, ds, stale); err == nil || !strings.Contains(err.Error(), "not a revision") {
		t.Fatalf("update without a revision: %v", err)
	}

	if err := datastore.DeletePolicy(ctx, ds, "web", p.Metadata.ResourceVersion); !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("delete at a stale revision: %v, want ErrConflict", err)
	}
	if err := datastore.DeletePolicy(ctx, ds, "web", upd.Metadata.ResourceVersion); err != nil {
		t.Fatal(err)
	}
	if err := datastore.DeletePolicy(ctx, ds, "web", ""); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("delete of a missing policy: %v, want ErrNotFound", err)
	}
	if _, err := datastore.GetPolicy(ctx, ds, "web"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}

	// Network sets, and a list that skips a hostile record.
	for _, name := range []string{"b", "a"} {
		s := resource.GlobalNetworkSet{TypeMeta: resource.TypeMeta{APIVersion: resource.APIVersion, Kind: resource.KindGlobalNetworkSet},
			Metadata: resource.ObjectMeta{Name: name}, Spec: resource.GlobalNetworkSetSpec{Nets: []string{"10.0.0.0/8"}}}
		if _, err := datastore.CreateNetworkSet(ctx, ds, s); err != nil {
			t.Fatal(err)
		}
	}
	rawPut(t, url, datastore.NetworkSetKey("c"), `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"not-c"},"spec":{}}`)
	sets, err := datastore.ListNetworkSets(ctx, ds)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || sets[0].Metadata.Name != "a" || sets[1].Metadata.Name != "b" {
		t.Fatalf("list = %+v, want a and b (c is stored under the wrong name)", sets)
	}
	if err := datastore.DeleteNetworkSet(ctx, ds, "a", ""); err != nil {
		t.Fatal(err)
	}
}

// TestCommitResourcesAllOrNothing: one change that cannot be made leaves
// every other change of the batch unmade.
func TestCommitResourcesAllOrNothing(t *testing.T) {
	ds, _ := connect(t)
	ctx := context.Background()
	existing, err := datastore.CreatePolicy(ctx, ds, policy(t, webPolicy))
	if err != nil {
		t.Fatal(err)
	}
	other := policy(t, strings.Replace(webPolicy, "name: web", "name: other", 1))
	dup := policy(t, webPolicy)
	err = ds.CommitResources(ctx, []datastore.ResourceChange{
		{Op: datastore.OpCreate, Res: &other},
		{Op: datastore.OpCreate, Res: &dup},
	})
	if !errors.Is(err, datastore.ErrConflict) {
		t.Fatalf("batch with an existing create: %v, want ErrConflict", err)
	}
	if _, err := datastore.GetPolicy(ctx, ds, "other"); !errors.Is(err, datastore.ErrNotFound) {
		t.Fatalf("other was written by a refused batch: %v", err)
	}
	all, err := ds.ReadResources(ctx)
	if err != nil || len(all) != 1 || all[datastore.RefOf(&existing)].Res == nil {
		t.Fatalf("read resources: %v %v", all, err)
	}

	var many []datastore.ResourceChange
	for i := 0; i <= datastore.MaxResourceChanges; i++ {
		p := policy(t, strings.Replace(webPolicy, "name: web", "name: p"+strconv.Itoa(i), 1))
		many = append(many, datastore.ResourceChange{Op: datastore.OpCreate, Res: &p})
	}
	if err := ds.CommitResources(ctx, many); err == nil || !strings.Contains(err.Error(), "split the file") {
		t.Fatalf("oversized batch: %v", err)
	}
}

// TestDecodeResourceRefusesWhatAFileCouldNotSay: records written straight
// into etcd are held to the file's rules, and to their key.
func TestDecodeResourceRefusesWhatAFileCouldNotSay(t *testing.T) {
	key := datastore.PolicyKey("p")
	good := `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"p"},"spec":{"selector":"a == 'x' \u0026\u0026 has(b)"}}`
	if _, err := datastore.DecodeResource(key, []byte(good)); err != nil {
		t.Fatalf("good record (HTML-escaped as encoding/json writes): %v", err)
	}
	for name, c := range map[string]struct{ key, value, want string }{
		"bad selector":   {key, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"p"},"spec":{"selector":"a ="}}`, "spec.selector"},
		"unknown action": {key, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"p"},"spec":{"ingress":[{"action":"Accept"}]}}`, "action"},
		"unknown field":  {key, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"p"},"spec":{"selectr":"all()"}}`, "selectr"},
		"name mismatch":  {key, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkPolicy","metadata":{"name":"q"},"spec":{}}`, "stored under"},
		"kind mismatch":  {key, `{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"p"},"spec":{}}`, "stored under"},
		"not an object":  {key, `null`, "not a JSON object"},
		"two documents":  {key, "{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkPolicy\",\"metadata\":{\"name\":\"p\"}}\n---\n{\"apiVersion\":\"projectcalico.org/v3\",\"kind\":\"GlobalNetworkSet\",\"metadata\":{\"name\":\"p\"}}", "documents"},
		"other key":      {datastore.ProfileKey("p"), good, "not a resource key"},
	} {
		_, err := datastore.DecodeResource(c.key, []byte(c.value))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v, want one line containing %q", name, err, c.want)
		}
	}
}

func rawGet(t *testing.T, url, key string) string {
	t.Helper()
	resp, err := etcdtest.Dial(t, url).Get(context.Background(), key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get %s: %v %v", key, resp, err)
	}
	return string(resp.Kvs[0].Value)
}

func rawPut(t *testing.T, url, key, value string) {
	t.Helper()
	if _, err := etcdtest.Dial(t, url).Put(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
}

// TestDecodeResourceRefusesYAMLAliases: a record written straight into
// etcd as a YAML flow mapping starts with "{" like JSON, and its aliases
// made every agent's decoder expand 43 KB into a policy of 16 million nets
// (249 MB as JSON). Records are JSON, which has no aliases: this one is
// refused before the YAML decoder sees it, and a YAML record without
// aliases is refused too.
func TestDecodeResourceRefusesYAMLAliases(t *testing.T) {
	var nets strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&nets, "10.%d.%d.0/24,", i/256, i%256)
	}
	bomb := `{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {selector: all(), ingress: [` +
		`{action: Allow, source: {nets: &n [` + nets.String() + `10.0.0.0/8]}}, &r {action: Allow, source: {nets: *n}, destination: {nets: *n}}` +
		strings.Repeat(", *r", 4000) + `]}}`
	plainYAML := `{apiVersion: projectcalico.org/v3, kind: GlobalNetworkPolicy, metadata: {name: p}, spec: {selector: all()}}`
	for name, v := range map[string]string{"alias bomb": bomb, "flow YAML": plainYAML} {
		r, err := datastore.DecodeResource(datastore.PolicyKey("p"), []byte(v))
		if err == nil {
			n := 0
			for _, rule := range r.(*resource.GlobalNetworkPolicy).Spec.Ingress {
				n += len(rule.Source.Nets) + len(rule.Destination.Nets)
			}
			t.Errorf("%s: a %d-byte record decoded to a policy of %d nets", name, len(v), n)
		} else if !strings.Contains(err.Error(), "not one JSON object") {
			t.Errorf("%s: refused for another reason: %v", name, err)
		}
	}
}
