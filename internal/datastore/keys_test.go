package datastore

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

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

// TestAgentRangeLeavesOutOnlyStatus: every key constant of keys.go but the
// status prefix lies inside the agents' range [Root, AgentKeysEnd), so a
// new prefix under Root that sorts after "status/" fails here instead of
// silently never reaching the agents. The list must name every Key and
// Prefix constant in keys.go; the test reads the file to hold it to that.
func TestAgentRangeLeavesOutOnlyStatus(t *testing.T) {
	inRange := map[string]string{
		"KeyBGPConfig": KeyBGPConfig, "KeyEncryption": KeyEncryption,
		"PrefixGlobalPeers": PrefixGlobalPeers, "PrefixPools": PrefixPools, "PrefixProfiles": PrefixProfiles,
		"PrefixPolicies": PrefixPolicies, "PrefixNetworkSets": PrefixNetworkSets, "PrefixHosts": PrefixHosts,
		"PrefixIPAM": PrefixIPAM, "PrefixBlocks": PrefixBlocks, "PrefixAffinities": PrefixAffinities,
		"PrefixHandles": PrefixHandles, "PrefixLibnetwork": PrefixLibnetwork, "PrefixLibnetworkNetworks": PrefixLibnetworkNetworks,
		"PrefixLibnetworkEndpoints": PrefixLibnetworkEndpoints,
	}
	fs := token.NewFileSet()
	f, err := parser.ParseFile(fs, "keys.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				name := n.Name
				if _, listed := inRange[name]; !listed && name != "PrefixStatus" && name != "AgentKeysEnd" && name != "Root" {
					t.Errorf("keys.go constant %s is not in this test: add it to inRange (and keep it before %q)", name, AgentKeysEnd)
				}
			}
		}
	}
	for name, k := range inRange {
		if !(k >= Root && k < AgentKeysEnd) || strings.HasPrefix(k, PrefixStatus) {
			t.Errorf("%s = %q is outside the agents' range [%q, %q)", name, k, Root, AgentKeysEnd)
		}
	}
	if StatusKey("host1") < AgentKeysEnd {
		t.Errorf("status record %q inside the agents' range", StatusKey("host1"))
	}
}
