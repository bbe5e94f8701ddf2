package libnetwork

import (
	"context"
	"strings"
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// `docker network create -d calico --subnet 10.0.5.0/24` over a registered
// node's address is refused, naming the node, whichever IPAM driver the
// network uses; nothing is stored. (`docker run --ip 10.0.5.3` on such a
// network would announce the node's address from a workload.)
func TestNetworkOverANodeAddressIsRefused(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	if err := p.c.DS.Put(ctx, datastore.NodeKey("host3"), api.Node{Name: "host3", IPv4: "10.0.5.3/24"}); err != nil {
		t.Fatal(err)
	}
	for _, space := range []string{AddressSpace, "LocalDefault"} {
		err := NetworkDriver{p.h1}.CreateNetwork(createReq("evil-"+space, "10.0.5.0/24", space, nil))
		if err == nil || !strings.Contains(err.Error(), "node host3's address 10.0.5.3") {
			t.Errorf("address space %s: want a refusal naming host3, got %v", space, err)
		}
		if _, _, err := p.c.DS.GetRaw(ctx, networkKey("host1", "evil-"+space)); err == nil {
			t.Errorf("address space %s: the refused network was recorded", space)
		}
	}
	if got := pools(t, p.c); len(got) != 0 {
		t.Errorf("pools after the refusal: %v", got)
	}
}
