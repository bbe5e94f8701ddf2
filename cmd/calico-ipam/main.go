// Command calico-ipam is the CNI IPAM plugin: addresses from Calico's
// pools for main plugins other than calico. See internal/cni.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/calico-go/calico/internal/cni"
)

func main() {
	skel.PluginMainFuncs(cni.IPAMFuncs(), version.All, "calico-ipam: addresses from Calico pools (calico-go)")
}
