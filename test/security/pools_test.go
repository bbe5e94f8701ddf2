package security

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestPoolsOverHostAddresses: a pool that contains a host's address lets a
// workload take that address (`docker network create --subnet 10.0.0.0/24`,
// then `--ip 10.0.0.2`), and the cluster would route the host's traffic to
// it. calicoctl refuses such a pool, naming the node, and refuses to start
// a node whose address lies in a pool, naming the pool. A pool record
// written straight to etcd over a node address is ignored by every agent
// and reported in `calicoctl status`.
func TestPoolsOverHostAddresses(t *testing.T) {
	w := world(t, walkthrough.Options{}, true)
	ctx := e2etest.Ctx(t, 5*time.Minute)
	h1, h2 := w.Hosts[0], w.Hosts[1]
	w1, w3 := w.Workloads["worker-1"], w.Workloads["worker-3"]
	e2etest.ListenTCP(t, w3.Netns, ":8080")

	refused := 0
	t.Run("pool add", func(t *testing.T) {
		for _, c := range []struct {
			cidr string
			want []string
		}{
			{"10.0.0.0/24", []string{"host1", "10.0.0.1"}},
			{"10.0.0.2/32", []string{"host2", "10.0.0.2"}},
			{"10.0.0.0/8", []string{"host1", "10.0.0.1"}},
			{"169.254.0.0/16", []string{"link-local"}},
			{"fe80::/64", []string{"link-local"}},
			{"127.0.0.0/8", []string{"loopback"}},
			{"224.0.0.0/4", []string{"multicast"}},
			{"0.0.0.0/8", []string{"unspecified"}},
		} {
			out, err := w.Ctl(ctx, h1, "pool", "add", c.cidr)
			if err == nil {
				t.Errorf("pool add %s accepted: %s", c.cidr, out)
				continue
			}
			refused++
			for _, s := range c.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("pool add %s: error %q does not name %q", c.cidr, err, s)
				}
			}
		}
		if out := ctl(t, ctx, w, h1, "pool", "show"); strings.Contains(out, "10.0.0.") {
			t.Errorf("a refused pool was stored:\n%s", out)
		}
	})

	t.Run("node inside a pool", func(t *testing.T) {
		ctl(t, ctx, w, h1, "pool", "add", "10.77.0.0/24")
		// Host 2 gets an address inside that pool, and someone starts a
		// second node there with it.
		if err := h2.AddAddr(h2.Iface, "10.77.0.5/24"); err != nil {
			t.Fatal(err)
		}
		out, err := w.Ctl(ctx, h2, "node", "--ip=10.77.0.5", "--name=inside")
		if err == nil {
			t.Errorf("node --ip=10.77.0.5 (inside pool 10.77.0.0/24) started: %s", out)
			ctl(t, ctx, w, h2, "node", "stop", "--name=inside")
		} else {
			refused++
			if !strings.Contains(err.Error(), "10.77.0.0/24") {
				t.Errorf("node --ip inside a pool: error %q does not name the pool", err)
			}
		}
		if out := ctl(t, ctx, w, h1, "node", "show"); strings.Contains(out, "inside") {
			t.Errorf("node inside registered:\n%s", out)
		}
	})

	t.Run("hostile pool record", func(t *testing.T) {
		cli := e2etest.EtcdFrom(t, h1, w.Etcd)
		hostile := api.Pool{CIDR: "10.0.0.0/24", IPIPMode: api.EncapNever, VXLANMode: api.EncapNever, NATOutgoing: true, BlockSize: 26}
		raw, _ := json.Marshal(hostile)
		key := datastore.PoolKey(hostile.CIDR)
		if _, err := cli.Put(ctx, key, string(raw)); err != nil {
			t.Fatal(err)
		}
		// Both agents see it, report it and leave it out of their dataplane.
		for _, h := range []*lab.Host{h1, h2} {
			e2etest.WaitFor(t, 20*time.Second, h.Label+" reports the hostile pool", func() (bool, string) {
				out, _ := w.Ctl(ctx, h, "status")
				ok := strings.Contains(out, "pool 10.0.0.0/24") && strings.Contains(out, "host1") && strings.Contains(out, "ignored")
				return ok, out
			})
			for _, set := range []string{"pools4", "masq4"} {
				out, err := h.Run(ctx, "nft", "list", "set", "inet", "calico", set)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(out, "10.0.0.0/24") {
					t.Errorf("%s: the hostile pool is in nft set %s:\n%s", h.Label, set, out)
				}
			}
		}
		if err := e2etest.Opens(ctx, w1.Netns, netip.Addr{}, e2etest.AP(w3.IP, 8080)); err != nil {
			t.Errorf("honest: worker-1 -> worker-3 with the hostile record present: %v", err)
		}
		if !t.Failed() {
			refused++
		}
		if _, err := cli.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		e2etest.WaitFor(t, 20*time.Second, "the problem clears once the record is gone", func() (bool, string) {
			out, _ := w.Ctl(ctx, h1, "status")
			return !strings.Contains(out, "10.0.0.0/24"), out
		})
	})
	t.Logf("FIGURE: pools over host addresses: %d of 10 refused or ignored (8 pool adds, a node inside a pool, a hostile pool record)", refused)
}
