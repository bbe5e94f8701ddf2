package cli

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestNodeFlagsCheckedBeforeStart: `calicoctl node` refuses a bad agent
// flag itself, with calico-node's own one-line error, before it contacts
// the datastore or starts anything (it used to start the agent and report
// its death, or, for --sweep-grace=0, start it with the default). The
// datastore named is a closed port, so a check that let a bad value
// through fails on "cannot reach the datastore" and starts nothing.
func TestNodeFlagsCheckedBeforeStart(t *testing.T) {
	t.Parallel()
	var v4, v6 string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p.Addr().Is4() && v4 == "" {
			v4 = p.Addr().String()
		} else if p.Addr().Is6() && v6 == "" {
			v6 = p.Addr().String()
		}
	}
	if v4 == "" {
		t.Skip("this host has no IPv4 address but loopback")
	}
	state := t.TempDir()
	env := map[string]string{
		"ETCD_AUTHORITY":   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"CALICO_STATE_DIR": state, "CALICO_NODENAME": "e2e-flags", "DOCKER_HOST": "none",
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--workload-to-host=open"}, `workload-to-host access "open": want "drop" or "policy"`},
		{[]string{"--workload-control-plane", "allow"}, `workload-to-control-plane access "allow": want "drop" or "policy"`},
		{[]string{"--sweep-grace=0"}, "--sweep-grace: want a positive duration, got 0s"},
		{[]string{"--resync-interval=-1s"}, "--resync-interval: want a positive duration, got -1s"},
		{[]string{"--bgp-port=70000"}, "--bgp-port: want a port number 1-65535"},
		{[]string{"--as=banana"}, `bad AS number "banana"`},
		{[]string{"--sweep-grace=soon"}, `invalid argument "soon" for "--sweep-grace" flag`},
		{[]string{"--name=a/b"}, `bad node name "a/b"`},
		{[]string{"--prometheus-listen=9091"}, `--prometheus-listen: want ADDR:PORT such as 127.0.0.1:9091 or :9091, got "9091"`},
	}
	if v6 != "" {
		cases = append(cases, struct {
			args []string
			want string
		}{[]string{"--ip6=" + v4}, fmt.Sprintf("--ip6: want this host's IPv6 address, got %q", v4)})
	}
	for _, c := range cases {
		args := append([]string{"node", "--ip=" + v4}, c.args...)
		if v6 != "" && !strings.HasPrefix(c.args[0], "--ip6") {
			args = append(args, "--ip6="+v6)
		}
		r := ctl(t, env, "", args...)
		first, rest, _ := strings.Cut(r.stderr, "\n")
		if r.code == 0 || !strings.HasPrefix(first, "error: ") || !strings.Contains(first, c.want) || rest != "" || r.stdout != "" {
			t.Errorf("want one line containing %q:\n%s", c.want, r)
		}
	}
	// Nothing was started: no pid file, no log.
	if err := filepath.Walk(state, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			t.Errorf("calicoctl node left %s", p)
		}
		return err
	}); err != nil {
		t.Error(err)
	}
}
