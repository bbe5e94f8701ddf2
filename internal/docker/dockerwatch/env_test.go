package dockerwatch

import (
	"slices"
	"strings"
	"testing"
)

func TestParseEnv(t *testing.T) {
	for _, c := range []struct {
		ip, profile string
		ips, profs  []string
		err         string
	}{
		{"auto", "test", []string{"auto"}, []string{"test"}, ""},
		{"auto,auto6", "a, b", []string{"auto", "auto6"}, []string{"a", "b"}, ""},
		{"192.168.0.7", "", []string{"192.168.0.7"}, nil, ""},
		{"fd00::7", "p", []string{"fd00::7"}, []string{"p"}, ""},
		{"", "p", nil, nil, "empty"},
		{"auto,", "p", nil, nil, "empty"},
		{"192.168.0.300", "p", nil, nil, "CALICO_IP=192.168.0.300"},
		{"192.168.0.0/24", "p", nil, nil, "CALICO_IP"},
		{"auto", "bad name!", nil, nil, "CALICO_PROFILE"},
		{"auto", "a,,b", nil, nil, "CALICO_PROFILE"},
		{"auto", "../etc", nil, nil, "CALICO_PROFILE"},
	} {
		ips, profs, err := ParseEnv(c.ip, c.profile)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q %q: want error with %q, got %v", c.ip, c.profile, c.err, err)
			}
			continue
		}
		if err != nil || !slices.Equal(ips, c.ips) || !slices.Equal(profs, c.profs) {
			t.Errorf("%q %q: got %v %v %v", c.ip, c.profile, ips, profs, err)
		}
	}
}

// TestRunEnv: only what docker run set counts. An image's ENV CALICO_IP and
// CALICO_PROFILE are subtracted; a -e that overrides the image with another
// value wins; a -e the image lacks is kept.
func TestRunEnv(t *testing.T) {
	image := []string{"PATH=/bin", "CALICO_IP=auto", "CALICO_PROFILE=db", "OTHER=1", "BROKEN"}
	for _, c := range []struct {
		name   string
		merged map[string]string
		want   map[string]string
	}{
		{"nothing given: the image chooses nothing",
			map[string]string{"PATH": "/bin", "CALICO_IP": "auto", "CALICO_PROFILE": "db", "OTHER": "1"},
			map[string]string{}},
		{"-e CALICO_IP=auto repeats the image: indistinguishable, dropped",
			map[string]string{"PATH": "/bin", "CALICO_IP": "auto", "CALICO_PROFILE": "db"},
			map[string]string{}},
		{"-e with other values wins over the image",
			map[string]string{"PATH": "/bin", "CALICO_IP": "192.168.100.9", "CALICO_PROFILE": "web"},
			map[string]string{"CALICO_IP": "192.168.100.9", "CALICO_PROFILE": "web"}},
		{"-e of a variable the image lacks is kept",
			map[string]string{"PATH": "/bin", "CALICO_IP": "auto6", "CALICO_PROFILE": "db", "MINE": "x"},
			map[string]string{"CALICO_IP": "auto6", "MINE": "x"}},
	} {
		got := RunEnv(c.merged, image)
		if len(got) != len(c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
			}
		}
	}
	// Repeated keys in the image: the last one is the image's value.
	if got := RunEnv(map[string]string{"CALICO_PROFILE": "b"}, []string{"CALICO_PROFILE=a", "CALICO_PROFILE=b"}); len(got) != 0 {
		t.Errorf("repeated image keys: got %v", got)
	}
	if got := fromImage(map[string]string{"CALICO_IP": "auto", "CALICO_PROFILE": "db"}, map[string]string{"CALICO_IP": "auto"}); !slices.Equal(got, []string{"CALICO_PROFILE"}) {
		t.Errorf("fromImage: %v", got)
	}
}
