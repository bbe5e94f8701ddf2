package client

import (
	"maps"
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	got, err := ParseLabels([]string{"app=web", "example.com/tier=front", "empty="})
	if want := map[string]string{"app": "web", "example.com/tier": "front", "empty": ""}; err != nil || !maps.Equal(got, want) {
		t.Errorf("got %v, %v; want %v", got, err, want)
	}
	for _, c := range []struct{ arg, want string }{
		{"app", `label "app": write KEY=VALUE`},
		{"=v", `label key "": the name must be`},
		{"a b=c", `label key "a b"`},
		{"app=has space", `label app value "has space"`},
		{"app=" + strings.Repeat("v", 64), "label app value"},
		{"Bad_Prefix/x=1", `label key "Bad_Prefix/x": the prefix before '/' must be a DNS name`},
		{"projectcalico.org/node=host2", `label "projectcalico.org/node": keys under projectcalico.org/ and profile.projectcalico.org/ are set by calico`},
		{"profile.projectcalico.org/admin=", `label "profile.projectcalico.org/admin": keys under`},
	} {
		if _, err := ParseLabels([]string{c.arg}); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error starting %q", c.arg, err, c.want)
		}
	}
	if _, err := ParseLabels([]string{"a=1", "a=2"}); err == nil || !strings.Contains(err.Error(), `"a" is given twice`) {
		t.Errorf("repeated key: %v", err)
	}
}

// Docker labels: the container's win over the network's; invalid ones
// and calico's own are skipped with a reason, never failing the rest.
func TestForeignLabels(t *testing.T) {
	network := map[string]string{"env": "test", "tier": "front"}
	container := map[string]string{"env": "prod", "com.docker.compose.project": "shop",
		"description": "a web server", "projectcalico.org/workload": "other"}
	got, skipped := ForeignLabels(network, container)
	if want := map[string]string{"env": "prod", "tier": "front", "com.docker.compose.project": "shop"}; !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if len(skipped) != 2 || !strings.Contains(skipped[0].Error(), "description") || !strings.Contains(skipped[1].Error(), "projectcalico.org/workload") {
		t.Errorf("skipped %v", skipped)
	}
	if got, skipped := ForeignLabels(nil, nil); got != nil || skipped != nil {
		t.Errorf("no labels: %v %v", got, skipped)
	}
}
