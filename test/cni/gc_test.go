package cni

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/e2etest"
	"github.com/calico-go/calico/internal/lab"
)

// hasLink says whether host h has an interface named name.
func hasLink(t *testing.T, h *lab.Host, name string) bool {
	t.Helper()
	var ok bool
	if err := h.Do(func() error { _, err := netlink.LinkByName(name); ok = err == nil; return nil }); err != nil {
		t.Fatal(err)
	}
	return ok
}

// TestLibcniGC: a runtime that lost its attachment cache (a fresh
// libcni cache, as after a crash) runs GC for net1 with one valid
// attachment. The plugin removes net1's other attachment (record, veth,
// address) and leaves alone what is not net1's: an attachment of net2 and
// a workload of `calicoctl container add`, though neither is in the list.
func TestLibcniGC(t *testing.T) {
	w := world(t)
	ctx := e2etest.Ctx(t, 3*time.Minute)
	h1 := w.Hosts[0]
	rt := runtime(t, h1)
	net1 := conflist(t, "net1", w.Etcd, nil)
	net2 := conflist(t, "net2", w.Etcd, nil)
	_, keepRC, keep := attach(t, ctx, w, rt, net1, h1, "keep")
	_, staleRC, stale := attach(t, ctx, w, rt, net1, h1, "stale")
	_, otherRC, other := attach(t, ctx, w, rt, net2, h1, "other")
	plainNS, err := w.Lab.AddWorkloadNetns(h1, "plain")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Ctl(ctx, h1, "container", "add", "plain", "auto", "--netns", plainNS.Path); err != nil {
		t.Fatal(err)
	}
	used := usedAddrs(t, ctx, w)

	fresh := runtime(t, h1)
	valid := []types.GCAttachment{{ContainerID: keepRC.ContainerID, IfName: keepRC.IfName}}
	if err := fresh.GCNetworkList(ctx, net1, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if hasLink(t, h1, stale.Interfaces[0].Name) {
		t.Errorf("the stale attachment's veth %s is still there", stale.Interfaces[0].Name)
	}
	if err := rt.CheckNetworkList(ctx, net1, staleRC); cniCode(err) != int(types.ErrUnknownContainer) {
		t.Errorf("CHECK of the stale attachment after GC: %v, want unknown container (no endpoint)", err)
	}
	if u := usedAddrs(t, ctx, w); u != used-1 {
		t.Errorf("GC left %d addresses assigned, want %d (the stale one released)", u, used-1)
	}
	for _, c := range []struct {
		rc   *libcni.RuntimeConf
		l    *libcni.NetworkConfigList
		veth string
	}{{keepRC, net1, keep.Interfaces[0].Name}, {otherRC, net2, other.Interfaces[0].Name}} {
		if err := rt.CheckNetworkList(ctx, c.l, c.rc); err != nil {
			t.Errorf("%s after net1's GC: %v", c.rc.ContainerID, err)
		}
		if !hasLink(t, h1, c.veth) {
			t.Errorf("%s lost its veth %s", c.rc.ContainerID, c.veth)
		}
	}
	if out, err := w.Ctl(ctx, h1, "endpoint", "show"); err != nil {
		t.Fatal(err)
	} else if !containsWord(out, "plain") {
		t.Errorf("net1's GC removed the calicoctl workload:\n%s", out)
	}
	// GC with nothing valid: still only net1's, and DEL afterwards is fine.
	if err := fresh.GCNetworkList(ctx, net1, &libcni.GCArgs{}); err != nil {
		t.Fatalf("GC with no valid attachments: %v", err)
	}
	if err := rt.CheckNetworkList(ctx, net2, otherRC); err != nil {
		t.Errorf("net2's attachment after net1's second GC: %v", err)
	}
	if err := rt.DelNetworkList(ctx, net1, keepRC); err != nil {
		t.Errorf("DEL after GC removed it: %v", err)
	}
}

// containsWord says whether out has w as a whole whitespace-separated field.
func containsWord(out, w string) bool {
	return slices.Contains(strings.Fields(out), w)
}
