package agent

import (
	"testing"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
)

// TestOtherHosts: only other hosts' endpoints and blocks spare a pass its
// read-back of the kernel; anything of this host, or of the cluster's
// configuration, does not.
func TestOtherHosts(t *testing.T) {
	s := calc.NewSnapshot()
	s.Blocks["10.90.1.0/26"] = api.Block{CIDR: "10.90.1.0/26", Affinity: "h1"}
	s.Blocks["10.90.2.0/26"] = api.Block{CIDR: "10.90.2.0/26", Affinity: "h2"}
	for key, want := range map[string]bool{
		datastore.EndpointKey("h2", "w1"):      true,
		datastore.EndpointKey("h1", "w1"):      false,
		datastore.BlockKey("10.90.2.0/26"):     true,
		datastore.BlockKey("10.90.3.0/26"):     true, // none yet: nobody's
		datastore.BlockKey("10.90.1.0/26"):     false,
		datastore.NodeKey("h2"):                false,
		datastore.NodePeerKey("h2", "1.2.3.4"): false,
		datastore.ProfileKey("P"):              false,
		datastore.PoolKey("10.90.0.0/16"):      false,
		datastore.KeyBGPConfig:                 false,
	} {
		if got := otherHosts(s, key, "h1"); got != want {
			t.Errorf("otherHosts(%s) = %v, want %v", key, got, want)
		}
	}
}
