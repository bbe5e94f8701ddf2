package datastore

import "testing"

// TestIsNodeKey: only a node's own record is a node key; a workload or a
// peer under the node named "node" is not (a suffix test would take the
// endpoint of a workload called "node" for a node record).
func TestIsNodeKey(t *testing.T) {
	for key, want := range map[string]bool{
		NodeKey("host1"):                  true,
		EndpointKey("host1", "node"):      false,
		NodePeerKey("host1", "10.0.0.1"):  false,
		PrefixHosts + "node":              false,
		PrefixHosts + "/node":             false,
		StatusKey("host1"):                false,
		HostPrefix("host1") + "node/more": false,
	} {
		if got := IsNodeKey(key); got != want {
			t.Errorf("IsNodeKey(%q) = %v, want %v", key, got, want)
		}
	}
}

// TestLibnetworkKeysUnderNodePrefixes: a node's Docker driver records lie
// under the prefixes node removal deletes, and another node's ("host10"
// beside "host1") do not.
func TestLibnetworkKeysUnderNodePrefixes(t *testing.T) {
	p := LibnetworkNodePrefixes("host1")
	if k := LibnetworkNetworkKey("host1", "n1"); k[:len(p[0])] != p[0] {
		t.Errorf("%s not under %s", k, p[0])
	}
	if k := LibnetworkEndpointKey("host1", "e1"); k[:len(p[1])] != p[1] {
		t.Errorf("%s not under %s", k, p[1])
	}
	if k := LibnetworkNetworkKey("host10", "n1"); len(k) >= len(p[0]) && k[:len(p[0])] == p[0] {
		t.Errorf("%s of host10 is under host1's %s", k, p[0])
	}
}
