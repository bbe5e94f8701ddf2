// Command calico is the CNI plugin: a runtime (podman, containerd, a
// kubelet) runs it to give a container its Calico endpoint. It is a small
// front (internal/cniagent): this host's agent does the work, or, without
// one, the full plugin in calico-ipam (internal/cni).
package main

import "github.com/calico-go/calico/internal/cniagent"

func main() {
	cniagent.PluginMain("calico: Calico-style L3 networking (calico-go)")
}
