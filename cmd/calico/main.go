// Command calico is the CNI plugin: a runtime (podman, containerd, a
// kubelet) runs it to give a container its Calico endpoint. See
// internal/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/calico-go/calico/internal/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), version.All, "calico: Calico-style L3 networking (calico-go)")
}
