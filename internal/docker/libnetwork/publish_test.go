package libnetwork

import (
	"slices"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
)

// The engine's bindings as they arrive in JSON: IPv6 host addresses are
// left out (the engine adds :: beside 0.0.0.0), 0.0.0.0 means every
// address, and what cannot be published is a one-line error naming the -p.
func TestPortBindings(t *testing.T) {
	opts := map[string]any{portMapOption: []any{
		map[string]any{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080},
		map[string]any{"Proto": 6, "IP": "", "Port": 80, "HostIP": "::", "HostPort": 8080, "HostPortEnd": 8080},
		map[string]any{"Proto": 17, "IP": "", "Port": 53, "HostIP": "10.0.0.1", "HostPort": 5353},
		map[string]any{"Proto": 6, "Port": 443, "HostIP": "0.0.0.0", "HostPort": 8443},
	}}
	got, err := portBindings(opts)
	want := []api.PortMapping{
		{Proto: "tcp", HostPort: 8080, Port: 80},
		{Proto: "udp", HostIP: "10.0.0.1", HostPort: 5353, Port: 53},
		{Proto: "tcp", HostPort: 8443, Port: 443},
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("portBindings: %+v, %v; want %+v", got, err, want)
	}
	if got, err := portBindings(map[string]any{}); got != nil || err != nil {
		t.Errorf("no bindings: %+v, %v", got, err)
	}
	for _, c := range []struct {
		b    map[string]any
		want string
	}{
		{map[string]any{"Proto": 6, "Port": 80}, "explicit host ports"},
		{map[string]any{"Proto": 132, "Port": 80, "HostPort": 80}, "tcp and udp"},
		{map[string]any{"Proto": 6, "Port": 80, "HostPort": 8000, "HostPortEnd": 8010}, "one host port"},
	} {
		if _, err := portBindings(map[string]any{portMapOption: []any{c.b}}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", c.b, err, c.want)
		}
	}
}
