package api

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// The names an endpoint's kernel and IPAM objects must have are derived
// from the endpoint's node and workload alone, here and nowhere else. Every
// component that makes them (calicoctl container add, the Docker watcher,
// the libnetwork driver) and every component that checks or deletes them
// (the agent's calculation, its sweeper, container remove, ipam check)
// computes the same name from the same two facts, so a datastore record
// cannot make any of them act on another workload's interface or address
// by naming it.

// EndpointID is the stable id of a workload's endpoint: node/workload.
func EndpointID(node, workload string) string { return node + "/" + workload }

// WorkloadIfaceName is the host-side interface of a workload's endpoint:
// "cali" and the first 11 hex characters of the SHA-256 of its endpoint id,
// 15 characters in all, the longest name Linux allows. Hashing keeps names
// stable across restarts and lets any component derive the name alone.
func WorkloadIfaceName(node, workload string) string {
	// The agent derives this for every endpoint on every pass: build the
	// id on the stack rather than concatenating.
	var buf [2*MaxNameLen + 1]byte
	id := append(append(append(buf[:0], node...), '/'), workload...)
	return ifaceName(sha256.Sum256(id))
}

// IfaceNameForID is the interface name derivation itself, for an endpoint
// id; WorkloadIfaceName is what callers normally want.
func IfaceNameForID(endpointID string) string {
	return ifaceName(sha256.Sum256([]byte(endpointID)))
}

func ifaceName(sum [sha256.Size]byte) string {
	var name [4 + 12]byte
	copy(name[:], "cali")
	hex.Encode(name[4:], sum[:6])
	return string(name[:15])
}

// WorkloadHandle is the IPAM handle holding a workload's addresses. '~'
// cannot occur in names, so node and workload never run together.
func WorkloadHandle(node, workload string) string { return node + "~" + workload }

// LibnetworkHandle is the IPAM handle of every address the Docker drivers
// take on node: the engine asks for an address before it names the
// endpoint, so the handle cannot name the endpoint. The doubled '~' keeps
// it apart from every workload's handle (workload names cannot start with
// '~').
func LibnetworkHandle(node string) string { return node + "~~libnetwork" }

// Orchestrators: what made an endpoint (api.Endpoint.Orchestrator).
const (
	// OrchestratorNetns: `calicoctl container add --netns` on a namespace.
	OrchestratorNetns = "netns"
	// OrchestratorDocker: a Docker container wired by calicoctl or by the
	// agent's watcher (CALICO_IP); removed when the container goes.
	OrchestratorDocker = "docker"
	// OrchestratorLibnetwork: the libnetwork driver, whose addresses are
	// held by LibnetworkHandle of their node.
	OrchestratorLibnetwork = "libnetwork"
	// OrchestratorCNI: the CNI plugin (podman, containerd, a kubelet).
	OrchestratorCNI = "cni"
)

// EndpointHandles are the IPAM handles that may hold ep's addresses: its
// own, and for a libnetwork endpoint also its node's driver handle.
func EndpointHandles(ep Endpoint) []string {
	hs := []string{WorkloadHandle(ep.Node, ep.Workload)}
	if ep.Orchestrator == OrchestratorLibnetwork {
		hs = append(hs, LibnetworkHandle(ep.Node))
	}
	return hs
}

// OwnsHandle says whether handle is one of EndpointHandles(ep), without
// building them (the agent asks for every address on every pass).
func OwnsHandle(ep Endpoint, handle string) bool {
	rest, ok := strings.CutPrefix(handle, ep.Node)
	if !ok {
		return false
	}
	if len(rest) == 1+len(ep.Workload) && rest[0] == '~' && rest[1:] == ep.Workload {
		return true
	}
	return ep.Orchestrator == OrchestratorLibnetwork && rest == "~~libnetwork"
}
