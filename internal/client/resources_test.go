package client

import (
	"errors"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
)

const twoDocs = `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: web
spec:
  selector: app == 'web'
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [80]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: outside
  labels: {zone: outside}
spec:
  nets: [203.0.113.0/24]
`

func decodeT(t *testing.T, doc string) []resource.Resource {
	t.Helper()
	rs, err := DecodeFile("f.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// storedAs is what ReadResources would return after rs were written at rev.
func storedAs(rs []resource.Resource, rev int64) map[datastore.ResourceRef]datastore.StoredResource {
	m := map[datastore.ResourceRef]datastore.StoredResource{}
	for _, r := range rs {
		c := withVersion(r, rev)
		c.GetMetadata().UID = "uid-" + r.GetName()
		c.GetMetadata().CreationTimestamp = "2026-01-01T00:00:00Z"
		m[datastore.RefOf(r)] = datastore.StoredResource{Res: c, Rev: rev}
	}
	return m
}

func outcomes(rs []Result) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Name+"="+string(r.Outcome))
	}
	return strings.Join(s, ",")
}

func TestPlanEachVerb(t *testing.T) {
	rs := decodeT(t, twoDocs)
	empty := map[datastore.ResourceRef]datastore.StoredResource{}
	same := storedAs(rs, 7)
	changed := storedAs(decodeT(t, strings.Replace(twoDocs, "ports: [80]", "ports: [81]", 1)), 7)

	for _, c := range []struct {
		name    string
		verb    Verb
		stored  map[datastore.ResourceRef]datastore.StoredResource
		skip    bool
		want    string // outcomes, or the error's text
		changes int
	}{
		{"apply new", Apply, empty, false, "web=created,outside=created", 2},
		{"apply same: nothing written", Apply, same, false, "web=unchanged,outside=unchanged", 0},
		{"apply changed", Apply, changed, false, "web=updated,outside=unchanged", 1},
		{"create new", Create, empty, false, "web=created,outside=created", 2},
		{"create existing", Create, same, false, `nothing was written: GlobalNetworkPolicy "web" already exists; change it with`, 0},
		{"replace missing", Replace, empty, false, `GlobalNetworkPolicy "web" does not exist; create it`, 0},
		{"replace changed", Replace, changed, false, "web=updated,outside=unchanged", 1},
		{"delete", Delete, same, false, "web=deleted,outside=deleted", 2},
		{"delete missing", Delete, empty, false, `GlobalNetworkPolicy "web" does not exist; GlobalNetworkSet "outside" does not exist`, 0},
		{"delete missing skipped", Delete, empty, true, "web=not found, skipped,outside=not found, skipped", 0},
	} {
		changes, results, err := plan(c.verb, rs, c.stored, c.skip)
		got := outcomes(results)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) || len(changes) != c.changes {
			t.Errorf("%s: got %q with %d changes, want %q with %d", c.name, got, len(changes), c.want, c.changes)
		}
	}

	// An update keeps the datastore's UID and creation time and is guarded
	// on the stored revision; the file's own objects are not touched.
	changes, _, err := plan(Apply, rs, changed, false)
	if err != nil {
		t.Fatal(err)
	}
	m := changes[0].Res.GetMetadata()
	if changes[0].Op != datastore.OpUpdate || m.UID != "uid-web" || m.CreationTimestamp == "" || m.ResourceVersion != "7" {
		t.Errorf("update change %+v %+v", changes[0].Op, m)
	}
	if rs[0].GetMetadata().ResourceVersion != "" || rs[0].GetMetadata().UID != "" {
		t.Errorf("plan changed the file's resource: %+v", rs[0].GetMetadata())
	}
}

func TestPlanResourceVersion(t *testing.T) {
	changed := storedAs(decodeT(t, strings.Replace(twoDocs, "ports: [80]", "ports: [81]", 1)), 9)
	// Edited from what was read at 9: written.
	at9 := strings.Replace(twoDocs, "  name: web\n", "  name: web\n  resourceVersion: \"9\"\n", 1)
	if _, _, err := plan(Apply, decodeT(t, at9), changed, false); err != nil {
		t.Errorf("apply at the stored revision: %v", err)
	}
	// Edited from an older read: refused.
	at5 := strings.Replace(at9, `"9"`, `"5"`, 1)
	_, _, err := plan(Replace, decodeT(t, at5), changed, false)
	if err == nil || !strings.Contains(err.Error(), `GlobalNetworkPolicy "web" was changed since resourceVersion 5 was read (it is at 9 now)`) {
		t.Errorf("stale replace: %v", err)
	}
	// An old read of unchanged content is still "unchanged": re-applying
	// what `get -o yaml` printed is always a no-op.
	same := storedAs(decodeT(t, twoDocs), 9)
	if _, res, err := plan(Apply, decodeT(t, strings.Replace(twoDocs, "  name: web\n", "  name: web\n  resourceVersion: \"5\"\n  uid: other\n", 1)), same, false); err != nil || res[0].Outcome != Unchanged {
		t.Errorf("stale but identical: %v %v", res, err)
	}
	bad := strings.Replace(at9, `"9"`, `"abc"`, 1)
	if _, _, err := plan(Apply, decodeT(t, bad), changed, false); err == nil || !strings.Contains(err.Error(), "not a datastore revision") {
		t.Errorf("bad revision: %v", err)
	}
}

// A stored record that is not valid can be replaced by apply, not created over.
func TestPlanOverInvalidRecord(t *testing.T) {
	rs := decodeT(t, twoDocs)
	stored := map[datastore.ResourceRef]datastore.StoredResource{
		datastore.RefOf(rs[0]): {Rev: 4, Err: errors.New("spec.selector: bad")},
	}
	changes, res, err := plan(Apply, rs, stored, false)
	if err != nil || res[0].Outcome != Updated || changes[0].Res.GetMetadata().ResourceVersion != "4" {
		t.Errorf("apply over an invalid record: %v %v", res, err)
	}
	if _, _, err := plan(Create, rs, stored, false); err == nil || !strings.Contains(err.Error(), "not valid (spec.selector: bad)") {
		t.Errorf("create over an invalid record: %v", err)
	}
}

func TestDecodeFileErrorsAreOneLine(t *testing.T) {
	for name, c := range map[string]struct{ doc, want string }{
		"bad YAML":      {"apiVersion: projectcalico.org/v3\nkind: [\n", "f.yaml:2:"},
		"unknown field": {strings.Replace(twoDocs, "  selector:", "  selectr:", 1), "f.yaml:6:3: "},
		"bad selector":  {strings.Replace(twoDocs, "app == 'web'", "app = 'web'", 1), "f.yaml:6:13: spec.selector: "},
		"bad port":      {strings.Replace(twoDocs, "[80]", "[80000]", 1), "f.yaml:11:15: spec.ingress[0].destination.ports[0]: port 80000 is outside 0-65535"},
		"second doc":    {strings.Replace(twoDocs, "203.0.113.0/24", "203.0.113.0/33", 1), "f.yaml:19:10: spec.nets[0]: "},
		"unknown kind":  {strings.Replace(twoDocs, "kind: GlobalNetworkSet", "kind: NetworkSet", 1), `f.yaml:14:7: kind: "NetworkSet" is not supported`},
		"empty":         {"", "f.yaml: no resources in the input"},
	} {
		_, err := DecodeFile("f.yaml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || !strings.HasSuffix(err.Error(), "nothing was written") {
			t.Errorf("%s: %v, want one line containing %q", name, err, c.want)
		}
	}
	// Four problems: three shown, the rest counted; stdin named as such.
	bad := strings.NewReplacer("Allow", "Alow", "[80]", "[80000]", "app == 'web'", "app =", "/24", "/33").Replace(twoDocs)
	_, err := DecodeFile("-", []byte(bad))
	if err == nil || !strings.HasPrefix(err.Error(), "<stdin>:6:") || !strings.Contains(err.Error(), "; and 1 more problem(s); nothing was written") {
		t.Errorf("stdin: %v", err)
	}
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]string{"gnp": resource.KindGlobalNetworkPolicy, "GlobalNetworkPolicies": resource.KindGlobalNetworkPolicy,
		"gns": resource.KindGlobalNetworkSet, "globalnetworkset": resource.KindGlobalNetworkSet, "profiles": KindProfile} {
		if got, err := ParseKind(in); err != nil || got != want {
			t.Errorf("ParseKind(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseKind("networkpolicy"); err == nil || !strings.Contains(err.Error(), `unknown resource type "networkpolicy"`) {
		t.Errorf("unknown kind: %v", err)
	}
}
