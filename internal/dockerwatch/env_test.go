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
