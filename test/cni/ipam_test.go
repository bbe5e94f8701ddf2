package cni

import (
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/walkthrough"
)

// TestCalicoIPAM runs the calico-ipam plugin as a runtime's chain would
// for a main plugin other than calico: an address from the pool under the
// attachment's own handle, the same one on a repeated ADD, released by DEL
// (and DEL again is no error).
func TestCalicoIPAM(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 2*time.Minute)
	h1 := w.Hosts[0]
	rt := runtime(t, h1)
	l, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"ipam1","plugins":[{"type":"calico-ipam","etcd_endpoints":"http://` + w.Etcd + `","ipam":{"type":"calico-ipam"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := w.Lab.AddWorkloadNetns(h1, "i1")
	if err != nil {
		t.Fatal(err)
	}
	rc := &libcni.RuntimeConf{ContainerID: "i1", NetNS: ns.Path, IfName: "eth0"}
	add := func() string {
		r, err := rt.AddNetworkList(ctx, l, rc)
		if err != nil {
			t.Fatalf("calico-ipam ADD: %v", err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil || len(res.IPs) != 1 {
			t.Fatalf("calico-ipam ADD result %v: %v", r, err)
		}
		return res.IPs[0].Address.IP.String()
	}
	a := add()
	used := usedAddrs(t, ctx, w)
	if b := add(); b != a {
		t.Errorf("second ADD gave %s, first %s", b, a)
	}
	if u := usedAddrs(t, ctx, w); u != used {
		t.Errorf("second ADD took an address: %d assigned before, %d after", used, u)
	}
	out, err := w.Ctl(ctx, h1, "ipam", "info", a)
	if err != nil || !strings.Contains(out, "host1~~cni~i1.eth0") || !strings.Contains(out, walkthrough.Pool) {
		t.Errorf("ipam info %s: %v\n%s; want it held by host1~~cni~i1.eth0 in %s", a, err, out, walkthrough.Pool)
	}
	if err := rt.DelNetworkList(ctx, l, rc); err != nil {
		t.Fatalf("calico-ipam DEL: %v", err)
	}
	if err := rt.DelNetworkList(ctx, l, rc); err != nil {
		t.Errorf("second calico-ipam DEL: %v", err)
	}
	if out, err := w.Ctl(ctx, h1, "ipam", "info", a); err != nil || !strings.Contains(out, "false") {
		t.Errorf("after DEL %s is still assigned: %v\n%s", a, err, out)
	}
}
