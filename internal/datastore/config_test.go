package datastore

import (
	"context"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestBadAddressFailsAtOnce: a datastore address that cannot be right fails
// on syntax, naming the variable it came from, without any dial.
func TestBadAddressFailsAtOnce(t *testing.T) {
	cases := []struct{ env, value, want string }{
		{"ETCD_AUTHORITY", "not a host", `bad datastore address "not a host" in ETCD_AUTHORITY: invalid character " " in host name`},
		{"ETCD_AUTHORITY", "10.0.0.1", `bad datastore address "10.0.0.1" in ETCD_AUTHORITY: missing port`},
		{"ETCD_AUTHORITY", "10.0.0.1:http", `invalid port ":http" after host`},
		{"ETCD_AUTHORITY", "10.0.0.1:0", `port "0" is not a number 1-65535`},
		{"ETCD_AUTHORITY", "10.0.0.1:70000", `port "70000" is not a number 1-65535`},
		{"ETCD_AUTHORITY", "-bad-.example:2379", `"-bad-.example" is neither an IP address nor a host name`},
		{"ETCD_AUTHORITY", "a_b:2379", `"a_b" is neither an IP address nor a host name`},
		{"ETCD_ENDPOINTS", "ftp://10.0.0.1:2379", `unknown scheme "ftp"`},
		{"ETCD_ENDPOINTS", "http://10.0.0.1:2379/v2/keys", "only a host and a port may follow the scheme"},
		{"ETCD_ENDPOINTS", "http://user@10.0.0.1:2379", "only a host and a port may follow the scheme"},
		{"ETCD_ENDPOINTS", "http://10.0.0.1:2379,http://[::1:2379", `bad datastore address "http://[::1:2379" in ETCD_ENDPOINTS`},
		{"ETCD_ENDPOINTS", " , ", "no datastore address in ETCD_ENDPOINTS"},
	}
	for _, c := range cases {
		t.Run(c.env+"="+c.value, func(t *testing.T) {
			t.Setenv("ETCD_ENDPOINTS", "")
			t.Setenv("ETCD_AUTHORITY", "")
			t.Setenv(c.env, c.value)
			start := time.Now()
			_, err := Connect(context.Background(), ConfigFromEnv(""))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %s: syntax errors must not wait for a dial", d)
			}
		})
	}
	for _, ok := range []string{"127.0.0.1:2379", "etcd-1.example.com:2379", "[fd00::1]:2379", "http://localhost:1", "https://10.0.0.1:2379/", "unix:///run/etcd.sock"} {
		if err := (Config{Endpoints: ConfigFromEnv(ok).Endpoints}).Validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

// FuzzEndpoints: address validation never panics, and what it accepts as
// http(s) is a URL with a host and a numeric port that a dialer can use.
func FuzzEndpoints(f *testing.F) {
	for _, s := range []string{"127.0.0.1:2379", "not a host", "http://[::1]:2379", "https://a.b:1/", "unix:///x", "http://%zz", "http://h:99999", ",,", "http://[fe80::1%25eth0]:2379"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		cfg := ConfigFromEnv(raw)
		if err := cfg.Validate(); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		for _, e := range cfg.Endpoints {
			u, err := url.Parse(e)
			if err != nil {
				t.Fatalf("accepted %q, which does not parse: %v", e, err)
			}
			if u.Scheme != "http" && u.Scheme != "https" {
				continue
			}
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				t.Fatalf("accepted %q without host:port: %v", e, err)
			}
		}
	})
}
