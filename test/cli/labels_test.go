package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// TestContainerLabels: labels on a network namespace workload, through
// `container add --label` and `container NAME label add|remove|show`,
// checked in what calicoctl prints and in the stored record; refused
// labels (bad syntax, calico's own prefixes) change nothing.
func TestContainerLabels(t *testing.T) {
	t.Parallel()
	s := startStore(t)
	s.node = "e2elbl1"
	ns := fmt.Sprintf("clilbl%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	env := s.env()
	env["CALICO_STATE_DIR"] = t.TempDir()
	env["DOCKER_HOST"] = "none"
	run := func(args ...string) result { t.Helper(); return ctl(t, env, "", args...) }
	ok := func(args ...string) string {
		t.Helper()
		r := run(args...)
		if r.code != 0 {
			t.Fatalf("want success:\n%s", r)
		}
		return r.stdout
	}
	stored := func() map[string]string {
		t.Helper()
		var ep endpointJSON
		if !s.get(endpointKey(s.node, "w1"), &ep) {
			t.Fatal("no endpoint record for w1")
		}
		return ep.Labels
	}
	s.put(nodeKey(s.node), nodeJSON{Name: s.node, IPv4: "10.0.0.1/24"})
	ok("pool", "add", "192.168.0.0/16")
	ok("profile", "add", "WEB")

	// A bad --label fails before anything is made.
	r := run("container", "add", "w1", "192.168.0.5", "--netns", "/run/netns/"+ns, "--label", "projectcalico.org/node=elsewhere")
	if r.code == 0 || !strings.Contains(r.stderr, `--label: label "projectcalico.org/node": keys under projectcalico.org/ and profile.projectcalico.org/ are set by calico`) {
		t.Fatalf("implicit --label: %s", r)
	}
	if keys := s.keys(prefixHosts + s.node + "/endpoint/"); len(keys) != 0 {
		t.Fatalf("a refused add left %q", keys)
	}

	ok("container", "add", "w1", "192.168.0.5", "--netns", "/run/netns/"+ns, "--profile", "WEB", "--label", "app=web", "--label=tier=front")
	t.Cleanup(func() { run("container", "remove", "w1") })
	if got, want := stored(), map[string]string{"app": "web", "tier": "front"}; !maps.Equal(got, want) {
		t.Errorf("container add --label stored %v, want %v", got, want)
	}

	rows := table(t, ok("container", "w1", "label", "show"), "key", "value", "implicit")
	want := [][]string{
		{"app", "web", ""}, {"tier", "front", ""},
		{"profile.projectcalico.org/WEB", "", "yes"}, {"projectcalico.org/node", s.node, "yes"},
		{"projectcalico.org/orchestrator", "netns", "yes"}, {"projectcalico.org/workload", "w1", "yes"},
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("label show:\n got %q\nwant %q", rows, want)
	}
	var shown []struct {
		Key      string `json:"key"`
		Value    string `json:"value"`
		Implicit bool   `json:"implicit"`
	}
	if err := json.Unmarshal([]byte(ok("container", "w1", "label", "show", "-o", "json")), &shown); err != nil || len(shown) != 6 ||
		shown[0].Key != "app" || shown[0].Implicit || shown[5].Key != "projectcalico.org/workload" || !shown[5].Implicit {
		t.Errorf("label show -o json: %+v (%v)", shown, err)
	}
	if out := ok("container", "w1", "label", "show", "-o", "yaml"); !strings.Contains(out, "- implicit: false\n  key: app\n  value: web\n") {
		t.Errorf("label show -o yaml:\n%s", out)
	}

	out := ok("container", "w1", "label", "add", "env=prod", "app=db")
	if want := "Label app=db set on w1 (was \"web\")\nLabel env=prod set on w1\n"; out != want {
		t.Errorf("label add printed %q, want %q", out, want)
	}
	if got, want := stored(), map[string]string{"app": "db", "env": "prod", "tier": "front"}; !maps.Equal(got, want) {
		t.Errorf("after label add: %v, want %v", got, want)
	}
	ok("container", "w1", "label", "remove", "tier", "env")
	if got, want := stored(), map[string]string{"app": "db"}; !maps.Equal(got, want) {
		t.Errorf("after label remove: %v, want %v", got, want)
	}
	// Concurrent changes each re-read the record (compare-and-swap): none
	// is lost to another's write.
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = run("container", "w1", "label", "add", fmt.Sprintf("k%d=v%d", i, i)).code
		}()
	}
	wg.Wait()
	got := stored()
	for i, code := range codes {
		if k := fmt.Sprintf("k%d", i); code != 0 || got[k] != fmt.Sprintf("v%d", i) {
			t.Errorf("concurrent label add %s: exit %d, stored %v", k, code, got)
		}
	}
	ok(append([]string{"container", "w1", "label", "remove"}, "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7")...)
	// The profile label follows the profiles.
	ok("container", "w1", "profile", "remove", "WEB")
	if out := ok("container", "w1", "label", "show"); strings.Contains(out, "profile.projectcalico.org/") {
		t.Errorf("label show after profile remove still lists a profile label:\n%s", out)
	}

	// Refused: each one error line, nothing stored changes.
	before := s.snapshot()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"container", "w1", "label", "add", "projectcalico.org/node=h2"}, `label "projectcalico.org/node": keys under projectcalico.org/ and profile.projectcalico.org/ are set by calico (node, orchestrator, workload, profiles), not by users; choose another key`},
		{[]string{"container", "w1", "label", "add", "profile.projectcalico.org/ADMIN="}, `label "profile.projectcalico.org/ADMIN": keys under`},
		{[]string{"container", "w1", "label", "add", "ok=1", "bad key=1"}, `label key "bad key": the name must be 1-63 letters`},
		{[]string{"container", "w1", "label", "add", "app=two words"}, `label app value "two words": at most 63 letters`},
		{[]string{"container", "w1", "label", "add", "app"}, `label "app": write KEY=VALUE (KEY= for an empty value)`},
		{[]string{"container", "w1", "label", "add", "a=1", "a=2"}, `label "a" is given twice`},
		{[]string{"container", "w1", "label", "remove", "projectcalico.org/workload"}, `label "projectcalico.org/workload" is set by calico and cannot be removed`},
		{[]string{"container", "w1", "label", "remove", "app", "nosuch"}, "container \"w1\" has no label \"nosuch\"; see `calicoctl container w1 label show`"},
		{[]string{"container", "w1", "label", "add", "x=1", "--label", "y=2"}, "--label belongs to `container add`"},
		{[]string{"container", "w9", "label", "show"}, `unknown container "w9" on host e2elbl1`},
	} {
		r := run(c.args...)
		if r.code == 0 || r.stdout != "" || !strings.HasPrefix(r.stderr, "error: "+c.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: want one error line starting %q, got\n%s", c.args, c.want, r)
		}
	}
	if d := diff(before, s.snapshot()); d != "" {
		t.Errorf("refused label commands changed the datastore:\n%s", d)
	}

	// An address another workload holds is refused naming that workload,
	// not its IPAM handle.
	r = run("container", "add", "w2", "192.168.0.5", "--netns", "/run/netns/"+ns)
	if want := `error: 192.168.0.5 is already assigned to workload "w1" on host e2elbl1 (netns); choose another address`; r.code == 0 || !strings.HasPrefix(r.stderr, want) {
		t.Errorf("add of a taken address: want %q, got\n%s", want, r)
	}
}
