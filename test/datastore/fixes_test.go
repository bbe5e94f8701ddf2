package dstest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// keysUnder lists the stored keys under prefix, sorted.
func keysUnder(t *testing.T, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// TestControlPlaneFixes covers bugs that were fixed: a failed `container
// add` left its new block claim behind; `pool remove` left the pool's empty
// blocks and claims behind; pools and BGP peers were sorted as text; `node
// bgp peer show --name ghost` printed an empty list; a syntactically bad
// datastore address waited for a dial timeout.
func TestControlPlaneFixes(t *testing.T) {
	w := newWorld(t, 1)
	h1 := w.hosts[0]
	w.startEtcd(h1)
	w.startNode(h1)
	cli := w.client(h1)
	w.ok(h1, "pool", "add", "192.168.70.0/24")

	t.Run("failed container add releases its new block", func(t *testing.T) {
		// The veth name is taken, so wiring fails after the address (and
		// with it this host's first block) was taken.
		iface := api.WorkloadIfaceName(h1.Label, "wfail")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := h1.Run(ctx, "ip", "link", "add", iface, "type", "bridge"); err != nil {
			t.Fatal(err)
		}
		ns, err := w.lab.AddWorkloadNetns(h1, "wfail")
		if err != nil {
			t.Fatal(err)
		}
		before := keysUnder(t, cli, datastore.PrefixIPAM)
		r := w.ctl(h1, "container", "add", "wfail", "auto", "--netns", ns.Path)
		if r.code == 0 || !strings.Contains(r.stderr, `container "wfail": wiring its interface`) {
			t.Fatalf("want a wiring failure: %s", r)
		}
		if after := keysUnder(t, cli, datastore.PrefixIPAM); !slices.Equal(before, after) {
			t.Errorf("IPAM records changed by a failed container add:\nbefore %q\nafter  %q", before, after)
		}
		if _, err := h1.Run(ctx, "ip", "link", "show", iface); err != nil {
			t.Errorf("the undo removed an interface it did not make: %v", err)
		}
		if out := w.ok(h1, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
			t.Errorf("ipam check: %s", out)
		}
		h1.Run(ctx, "ip", "link", "del", iface)
	})

	t.Run("pool remove refuses while in use and removes empty blocks", func(t *testing.T) {
		w.ok(h1, "pool", "add", "10.90.0.0/24")
		ns, err := w.lab.AddWorkloadNetns(h1, "wpool")
		if err != nil {
			t.Fatal(err)
		}
		w.ok(h1, "container", "add", "wpool", "10.90.0.5", "--netns", ns.Path)
		// An empty block with its claim, as older code left behind.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, datastore.BlockKey("10.90.0.128/26"), `{"cidr":"10.90.0.128/26","affinity":"h1","allocations":{}}`); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, datastore.AffinityKey("h1", "10.90.0.128/26"), "10.90.0.128/26"); err != nil {
			t.Fatal(err)
		}
		before := keysUnder(t, cli, datastore.Root+"pool/")
		beforeIPAM := keysUnder(t, cli, datastore.PrefixIPAM)
		r := w.ctl(h1, "pool", "remove", "10.90.0.0/24")
		if r.code == 0 || !strings.Contains(r.stderr, "error: pool 10.90.0.0/24 has 1 address(es) in use; remove those workloads first, or use --force") {
			t.Fatalf("want a refusal: %s", r)
		}
		if !slices.Equal(before, keysUnder(t, cli, datastore.Root+"pool/")) || !slices.Equal(beforeIPAM, keysUnder(t, cli, datastore.PrefixIPAM)) {
			t.Error("a refused pool remove changed the datastore")
		}
		w.ok(h1, "container", "remove", "wpool")
		w.ok(h1, "pool", "remove", "10.90.0.0/24")
		for _, k := range keysUnder(t, cli, datastore.PrefixIPAM) {
			if strings.Contains(k, "10.90.0.") {
				t.Errorf("left behind by pool remove: %s", k)
			}
		}
		if out := w.ok(h1, "ipam", "check"); !strings.Contains(out, "IPAM is consistent") {
			t.Errorf("ipam check: %s", out)
		}
	})

	t.Run("pools and peers sort by address", func(t *testing.T) {
		w.ok(h1, "pool", "add", "10.100.0.0/24", "9.9.0.0/24", "fd00:5::/64", "172.16.0.0/24", "10.20.0.0/24")
		var pools []struct{ CIDR string }
		if err := json.Unmarshal([]byte(w.ok(h1, "pool", "show", "-o", "json")), &pools); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range pools {
			got = append(got, p.CIDR)
		}
		want := []string{"9.9.0.0/24", "10.20.0.0/24", "10.100.0.0/24", "172.16.0.0/24", "192.168.70.0/24", "fd00:5::/64"}
		if !slices.Equal(got, want) {
			t.Errorf("pool show order %q, want %q", got, want)
		}
		// Peers nobody answers for: the agent's attempts stay on the lab fabric.
		peers := []string{"10.0.0.100", "10.0.0.9", "10.0.0.10", "9.1.1.1"}
		for _, p := range peers {
			w.ok(h1, "bgp", "peer", "add", p, "as", "65010")
			w.ok(h1, "node", "bgp", "peer", "add", p, "as", "65011")
		}
		want = []string{"9.1.1.1", "10.0.0.9", "10.0.0.10", "10.0.0.100"}
		for _, cmd := range [][]string{{"bgp", "peer", "show", "-o", "json"}, {"node", "bgp", "peer", "show", "-o", "json"}} {
			var ps []struct{ IP string }
			if err := json.Unmarshal([]byte(w.ok(h1, cmd...)), &ps); err != nil {
				t.Fatal(err)
			}
			got = nil
			for _, p := range ps {
				got = append(got, p.IP)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s order %q, want %q", strings.Join(cmd, " "), got, want)
			}
		}
		for _, p := range peers {
			w.ok(h1, "bgp", "peer", "remove", p)
			w.ok(h1, "node", "bgp", "peer", "remove", p)
		}
	})

	t.Run("peer show for an unknown node is an error", func(t *testing.T) {
		r := w.ctl(h1, "node", "bgp", "peer", "show", "--name", "ghost")
		if r.code == 0 || r.stdout != "" || !strings.HasPrefix(r.stderr, `error: no calico node "ghost" in the datastore`) {
			t.Errorf("want an error naming the node: %s", r)
		}
	})

	t.Run("bad datastore address fails on syntax", func(t *testing.T) {
		for _, addr := range []string{"not a host", "10.0.0.1", "10.0.0.1:99999"} {
			env := w.env(h1)
			delete(env, "ETCD_ENDPOINTS")
			env["ETCD_AUTHORITY"] = addr
			r := calicoctl(t, h1.Netns, env, "", "pool", "show")
			t.Logf("FIGURE: ETCD_AUTHORITY=%q fails in %s: %s", addr, r.elapsed.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			if r.code == 0 || !strings.HasPrefix(r.stderr, `error: bad datastore address "`+addr+`" in ETCD_AUTHORITY: `) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("want one line naming the address and the variable: %s", r)
			}
			if r.elapsed > 2*time.Second {
				t.Errorf("took %s; a syntax error needs no dial", r.elapsed)
			}
		}
	})
}
