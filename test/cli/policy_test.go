package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const policyFile = `# A policy and a network set, as a user writes them.
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: allow-web
spec:
  order: 100
  selector: app == 'web' && env in {'prod', 'dev'}
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source:
      selector: role == 'client'
    destination:
      ports: [80, "8000:8080"]
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: outside
  labels:
    zone: outside
spec:
  nets: [203.0.113.0/24, 198.51.100.7]
`

// v3JSON is what `get -o json` prints of one resource.
type v3JSON struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name              string            `json:"name"`
		Labels            map[string]string `json:"labels"`
		ResourceVersion   string            `json:"resourceVersion"`
		CreationTimestamp string            `json:"creationTimestamp"`
		UID               string            `json:"uid"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// TestPolicyResources drives apply, create, replace, get and delete of v3
// resources against a real etcd and checks what is stored after each.
func TestPolicyResources(t *testing.T) {
	t.Parallel()
	s := startStore(t)
	s.node = "e2epol1"
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("policy.yaml", policyFile)
	s.ok("profile", "add", "P1")

	// apply creates, then changes nothing.
	out := s.ok("apply", "-f", file)
	if out != "GlobalNetworkPolicy \"allow-web\" created\nGlobalNetworkSet \"outside\" created\n" {
		t.Errorf("first apply printed %q", out)
	}
	stored := s.snapshot()
	if got := s.keys("/calico/v1/policy/"); len(got) != 1 || got[0] != "/calico/v1/policy/allow-web" {
		t.Fatalf("policy keys %v", got)
	}
	out = s.ok("apply", "-f", file)
	if out != "GlobalNetworkPolicy \"allow-web\" unchanged\nGlobalNetworkSet \"outside\" unchanged\n" {
		t.Errorf("second apply printed %q", out)
	}
	if d := diff(stored, s.snapshot()); d != "" {
		t.Errorf("second apply changed the datastore:\n%s", d)
	}

	// get: the datastore's metadata; the revision is etcd's.
	var gnp v3JSON
	s.okJSON(&gnp, "get", "gnp", "allow-web", "-o", "json")
	if gnp.Kind != "GlobalNetworkPolicy" || gnp.APIVersion != "projectcalico.org/v3" || gnp.Metadata.ResourceVersion != strconv.FormatInt(s.modRev("/calico/v1/policy/allow-web"), 10) {
		t.Errorf("get -o json: %+v", gnp)
	}
	if !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(gnp.Metadata.UID) || gnp.Metadata.CreationTimestamp == "" {
		t.Errorf("create did not stamp uid and creationTimestamp: %+v", gnp.Metadata)
	}
	rows := table(t, s.ok("get", "globalnetworkpolicies"), "name", "order", "selector")
	if len(rows) != 1 || rows[0][0] != "allow-web" || rows[0][1] != "100" || rows[0][2] != "app == 'web' && env in {'prod', 'dev'}" {
		t.Errorf("get table: %q", rows)
	}
	rows = table(t, s.ok("get", "gnp", "-o", "wide"), "name", "order", "selector", "types", "ingress", "egress")
	if len(rows) != 1 || rows[0][3] != "Ingress" || rows[0][4] != "2" || rows[0][5] != "0" {
		t.Errorf("get wide: %q", rows)
	}
	rows = table(t, s.ok("get", "gns", "-o", "wide"), "name", "nets", "labels")
	if len(rows) != 1 || rows[0][1] != "203.0.113.0/24,198.51.100.7" || rows[0][2] != "zone=outside" {
		t.Errorf("get gns wide: %q", rows)
	}
	rows = table(t, s.ok("get", "profiles"), "name", "tags", "inbound", "outbound")
	if len(rows) != 1 || rows[0][0] != "P1" {
		t.Errorf("get profiles: %q", rows)
	}

	// get -o yaml|json round-trips: applying what it printed changes
	// nothing, for one resource and for a list (JSON prints a list as one
	// "GlobalNetworkPolicyList" object).
	for _, args := range [][]string{{"get", "gnp", "allow-web", "-o", "yaml"}, {"get", "globalnetworksets", "-o", "yaml"}, {"get", "gnp", "-o", "json"}} {
		y := s.ok(args...)
		out := s.okIn(y, "apply", "-f", "-")
		if !strings.HasSuffix(out, " unchanged\n") || strings.Count(out, "\n") != strings.Count(s.ok(args[:2]...), "\n")-1 {
			t.Errorf("re-applying %v printed %q", args, out)
		}
		if d := diff(stored, s.snapshot()); d != "" {
			t.Errorf("re-applying %v changed the datastore:\n%s", args, d)
		}
	}
	yamlAtRead := s.ok("get", "gnp", "allow-web", "-o", "yaml")

	// create of an existing resource and replace of a missing one fail,
	// whole-file: the other resource of the file is not written either.
	ghost := write("ghost.yaml", strings.Replace(policyFile, "name: outside", "name: ghost", 1))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "-f", file}, `error: nothing was written: GlobalNetworkPolicy "allow-web" already exists; change it with ` + "`calicoctl apply`"},
		{[]string{"create", "-f", ghost}, `error: nothing was written: GlobalNetworkPolicy "allow-web" already exists`},
		{[]string{"replace", "-f", ghost}, `error: nothing was written: GlobalNetworkSet "ghost" does not exist; create it`},
		{[]string{"delete", "-f", ghost}, `error: nothing was written: GlobalNetworkSet "ghost" does not exist`},
		{[]string{"delete", "gnp", "ghost"}, `error: GlobalNetworkPolicy "ghost" not found; list them with ` + "`calicoctl get globalnetworkpolicies`"},
		{[]string{"get", "gns", "ghost"}, `error: GlobalNetworkSet "ghost" not found`},
		{[]string{"apply"}, "error: calicoctl apply needs -f FILE (or -f - for standard input)"},
		{[]string{"delete", "-f", file, "gnp", "allow-web"}, "error: give either -f FILE or TYPE NAME, not both"},
		{[]string{"get", "networkpolicy"}, `error: unknown resource type "networkpolicy": want globalnetworkpolicy (gnp), globalnetworkset (gns) or profile`},
	} {
		s.expectRefused(c.args, "", c.want)
	}

	// replace changes the spec, keeps uid and creation time, bumps the revision.
	changed := write("changed.yaml", strings.Replace(policyFile, `ports: [80, "8000:8080"]`, `ports: [443]`, 1))
	out = s.ok("replace", "-f", changed)
	if out != "GlobalNetworkPolicy \"allow-web\" updated\nGlobalNetworkSet \"outside\" unchanged\n" {
		t.Errorf("replace printed %q", out)
	}
	var after v3JSON
	s.okJSON(&after, "get", "gnp", "allow-web", "-o", "json")
	if after.Metadata.UID != gnp.Metadata.UID || after.Metadata.CreationTimestamp != gnp.Metadata.CreationTimestamp ||
		after.Metadata.ResourceVersion == gnp.Metadata.ResourceVersion || !strings.Contains(string(after.Spec), "443") || strings.Contains(string(after.Spec), "8000:8080") {
		t.Errorf("after replace: %+v %s", after.Metadata, after.Spec)
	}
	// What was read before the replace is stale now: applying an edit of
	// it is refused, not silently lost.
	stale := strings.Replace(yamlAtRead, "- 80\n", "- 81\n", 1)
	s.expectRefused([]string{"apply", "-f", "-"}, stale, `error: nothing was written: GlobalNetworkPolicy "allow-web" was changed since resourceVersion `+gnp.Metadata.ResourceVersion+" was read")

	// JSON input works as YAML does.
	s.okIn(`{"apiVersion":"projectcalico.org/v3","kind":"GlobalNetworkSet","metadata":{"name":"json-set"},"spec":{"nets":["10.9.0.0/16"]}}`, "create", "-f", "-")
	out = s.ok("delete", "globalnetworkset", "json-set")
	if out != "GlobalNetworkSet \"json-set\" deleted\n" {
		t.Errorf("delete by name printed %q", out)
	}

	// delete -f takes every resource of the file, and only those.
	out = s.ok("delete", "-f", file)
	if out != "GlobalNetworkPolicy \"allow-web\" deleted\nGlobalNetworkSet \"outside\" deleted\n" {
		t.Errorf("delete -f printed %q", out)
	}
	if k := append(s.keys("/calico/v1/policy/"), s.keys("/calico/v1/networkset/")...); len(k) != 0 {
		t.Errorf("left after delete: %v", k)
	}
	if !s.get("/calico/v1/profile/P1", nil) {
		t.Error("delete -f took the profile too")
	}
	out = s.ok("delete", "-f", file, "--skip-not-exists")
	if strings.Count(out, "not found, skipped") != 2 {
		t.Errorf("delete --skip-not-exists printed %q", out)
	}
}

// TestPolicyBadFiles: every bad file is refused with one line naming the
// file, line, column and field, and nothing is written, even when the bad
// document comes after good ones.
func TestPolicyBadFiles(t *testing.T) {
	t.Parallel()
	s := startStore(t)
	s.node = "e2epol2"
	dir := t.TempDir()
	s.okIn(policyFile, "apply", "-f", "-")

	// A new good document first, so a partial write would show.
	fresh := strings.NewReplacer("allow-web", "fresh", "name: outside", "name: fresh-set").Replace(policyFile)
	edited := strings.Replace(policyFile, "order: 100", "order: 200", 1)
	cases := []struct {
		name, content, want string
	}{
		{"bad YAML", fresh + "---\napiVersion: projectcalico.org/v3\nkind: [GlobalNetworkPolicy\n", "bad.yaml:29:7: sequence end token ']' not found"},
		{"unknown field", edited + "---\n" + strings.Replace(fresh, "  selector: app", "  selectr: app", 1), `bad.yaml:35:3: unknown field "selectr"`},
		{"bad selector", strings.Replace(edited, "role == 'client'", "role == client", 1), "bad.yaml:14:17: spec.ingress[0].source.selector: "},
		{"bad port", fresh + "---\n" + strings.Replace(edited, `"8000:8080"`, `"8080:8000"`, 1), `bad.yaml:43:19: spec.ingress[0].destination.ports[1]: port range "8080:8000": the first port is above the second`},
		{"port out of range", strings.Replace(edited, "[80,", "[65536,", 1), "bad.yaml:16:15: spec.ingress[0].destination.ports[0]: port 65536 is outside 0-65535"},
		{"unknown action", strings.Replace(edited, "action: Deny", "action: Reject", 1), `bad.yaml:17:13: spec.ingress[1].action: "Reject": want Allow, Deny, Log or Pass`},
		{"bad net", strings.Replace(edited, "198.51.100.7", "198.51.100.700", 1), "bad.yaml:26:26: spec.nets[1]: "},
		{"unknown kind", strings.Replace(edited, "kind: GlobalNetworkSet", "kind: NetworkSet", 1), `bad.yaml:20:7: kind: "NetworkSet" is not supported; want GlobalNetworkPolicy or GlobalNetworkSet`},
		{"duplicate", policyFile + "---\n" + policyFile, `is also defined in document 1`},
		{"empty", "# nothing\n", "bad.yaml: no resources in the input"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := s.on(t)
			p := filepath.Join(dir, "bad.yaml")
			if err := os.WriteFile(p, []byte(c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, verb := range []string{"apply", "create", "replace", "delete"} {
				s.expectRefused([]string{verb, "-f", p}, "", "error: "+p+":", strings.Replace(c.want, "bad.yaml", p, 1))
			}
			s.expectRefused([]string{"apply", "-f", "-"}, c.content, strings.Replace(c.want, "bad.yaml", "<stdin>", 1))
		})
	}
}

// expectRefused runs a command that must fail with one error line
// containing want, print nothing on stdout and leave the datastore as it was.
func (s *store) expectRefused(args []string, stdin string, wants ...string) {
	s.t.Helper()
	before := s.snapshot()
	r := ctl(s.t, s.env(), stdin, args...)
	if d := diff(before, s.snapshot()); d != "" {
		s.t.Errorf("datastore changed:\n%s\n%s", d, r)
	}
	if r.code == 0 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "error: ") {
		s.t.Errorf("want one error line:\n%s", r)
	}
	for _, want := range wants {
		if !strings.Contains(r.stderr, want) {
			s.t.Errorf("error does not contain %q:\n%s", want, r)
		}
	}
}

// modRev is the etcd mod revision of key.
func (s *store) modRev(key string) int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.etcd.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		s.t.Fatalf("get %s: %v", key, err)
	}
	return resp.Kvs[0].ModRevision
}
