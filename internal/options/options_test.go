package options

import (
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/calico-go/calico/internal/docker"
	"github.com/calico-go/calico/internal/docker/libnetwork"
)

// parse is what calico-node does with its arguments.
func parse(t *testing.T, args []string) *Node {
	t.Helper()
	o := NewNode()
	fs := pflag.NewFlagSet("calico-node", pflag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return o
}

func TestArgsDefaultsAreEmpty(t *testing.T) {
	if args := NewNode().Args(); len(args) != 0 {
		t.Errorf("defaults rendered as %q, want nothing", args)
	}
}

// Every flag survives calicoctl -> argv -> calico-node: a flag added to
// AddFlags is passed on without anyone remembering to.
func TestArgsRoundTripEveryFlag(t *testing.T) {
	values := map[string]string{
		"name": "host-1", "ip": "10.0.0.1", "ip6": "fd00::1", "as": "64600", "bgp-port": "1179",
		"bgp-hold-time": "9s", "bgp-restart-time": "-1s", "workload-to-host": "policy",
		"workload-control-plane": "policy", "resync-interval": "1m0s", "sweep-grace": "5s",
		"debug": "true", "libnetwork": "true", "docker-host": "unix:///tmp/d.sock", "plugin-dir": "/tmp/plugins",
		"route-reflector": "true", "cluster-id": "1.0.0.1", "publish-ports": "80-9000", "prometheus-listen": "10.0.0.1:9091",
	}
	o := NewNode()
	fs := pflag.NewFlagSet("calicoctl node", pflag.ContinueOnError)
	o.AddFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		v, ok := values[f.Name]
		if !ok {
			t.Errorf("flag --%s has no test value: add one above", f.Name)
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			t.Errorf("--%s=%s: %v", f.Name, v, err)
		}
	})
	args := o.Args()
	if len(args) != len(values) {
		t.Errorf("Args rendered %d flags, want %d: %q", len(args), len(values), args)
	}
	if got := parse(t, args); !reflect.DeepEqual(got, o) {
		t.Errorf("round trip through %q:\n got %+v\nwant %+v", args, got, o)
	}
	// Args leaves o alone (it binds a copy).
	if o.Name != "host-1" || !o.Debug {
		t.Errorf("Args changed o: %+v", o)
	}
}

func TestArgsOnlyWhatDiffers(t *testing.T) {
	o := NewNode()
	o.Name, o.IP, o.SweepGrace = "h1", "10.0.0.1", DefaultSweepGrace
	want := []string{"--ip=10.0.0.1", "--name=h1"}
	if got := o.Args(); !reflect.DeepEqual(got, want) {
		t.Errorf("Args = %q, want %q", got, want)
	}
}

func TestValidate(t *testing.T) {
	ok := func(o *Node) { o.IP = "10.0.0.1" }
	cases := []struct {
		name string
		set  func(o *Node)
		want string // "" for valid
	}{
		{"minimal", ok, ""},
		{"all set", func(o *Node) {
			ok(o)
			o.IP6, o.AS, o.WorkloadToHost, o.WorkloadControlPlane, o.BGPPort = "fd00::1", "1.10", "policy", "policy", 1179
		}, ""},
		{"no ip", func(o *Node) {}, `--ip: want this host's IPv4 address, got ""`},
		{"ip is IPv6", func(o *Node) { o.IP = "fd00::1" }, `--ip: want this host's IPv4 address, got "fd00::1"`},
		{"bad ip", func(o *Node) { o.IP = "10.0.0.300" }, `--ip: want this host's IPv4 address, got "10.0.0.300"`},
		{"ip6 is IPv4", func(o *Node) { ok(o); o.IP6 = "10.0.0.2" }, `--ip6: want this host's IPv6 address, got "10.0.0.2"`},
		{"bad as", func(o *Node) { ok(o); o.AS = "x" }, `bad AS number "x"`},
		{"bad port", func(o *Node) { ok(o); o.BGPPort = 70000 }, "--bgp-port: want a port number 1-65535 (0: 179), got 70000"},
		{"bad to-host", func(o *Node) { ok(o); o.WorkloadToHost = "allow" }, `workload-to-host access "allow": want "drop" or "policy"`},
		{"bad control plane", func(o *Node) { ok(o); o.WorkloadControlPlane = "open" }, `workload-to-control-plane access "open": want "drop" or "policy"`},
		{"zero sweep", func(o *Node) { ok(o); o.SweepGrace = 0 }, "--sweep-grace: want a positive duration, got 0s"},
		{"negative resync", func(o *Node) { ok(o); o.ResyncInterval = -1 }, "--resync-interval: want a positive duration, got -1ns"},
		{"route reflector", func(o *Node) { ok(o); o.RouteReflector, o.ClusterID = true, "1.0.0.1" }, ""},
		{"cluster id without reflector", func(o *Node) { ok(o); o.ClusterID = "1.0.0.1" }, "--cluster-id: only for a route reflector; add --route-reflector"},
		{"prometheus", func(o *Node) { ok(o); o.PrometheusListen = "10.0.0.1:9091" }, ""},
		{"prometheus, every address", func(o *Node) { ok(o); o.PrometheusListen = ":9091" }, ""},
		{"prometheus without port", func(o *Node) { ok(o); o.PrometheusListen = "10.0.0.1" }, `--prometheus-listen: want ADDR:PORT such as 127.0.0.1:9091 or :9091, got "10.0.0.1"`},
		{"prometheus host name", func(o *Node) { ok(o); o.PrometheusListen = "localhost:9091" }, `--prometheus-listen: want ADDR:PORT with an IP address, got "localhost:9091"`},
		{"bad cluster id", func(o *Node) { ok(o); o.RouteReflector, o.ClusterID = true, "7" }, `--cluster-id: cluster ID "7": want an IPv4 address`},
	}
	for _, c := range cases {
		o := NewNode()
		c.set(o)
		v, err := o.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: got %v, want one line starting %q", c.name, err, c.want)
		case c.want == "" && v.IP.String() != o.IP:
			t.Errorf("%s: parsed IP %s, want %s", c.name, v.IP, o.IP)
		}
	}
}

func TestNodeName(t *testing.T) {
	t.Setenv("CALICO_NODENAME", "from-env")
	if n, err := (&Node{Name: "given"}).NodeName(); n != "given" || err != nil {
		t.Errorf("--name: got %q, %v", n, err)
	}
	if n, err := (&Node{}).NodeName(); n != "from-env" || err != nil {
		t.Errorf("CALICO_NODENAME: got %q, %v", n, err)
	}
	if _, err := (&Node{Name: "../h1"}).NodeName(); err == nil || !strings.Contains(err.Error(), `bad node name "../h1"`) {
		t.Errorf("bad --name: got %v", err)
	}
}

// Help texts that name another package's default say the same as it.
func TestHelpNamesTheDefaults(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	NewNode().AddFlags(fs)
	for flag, want := range map[string]string{"plugin-dir": libnetwork.DefaultPluginDir, "docker-host": "unix://" + docker.DefaultSocket} {
		if u := fs.Lookup(flag).Usage; !strings.Contains(u, "(default "+want) && !strings.Contains(u, "else "+want) {
			t.Errorf("--%s help %q does not name the default %s", flag, u, want)
		}
	}
}
