// Command calico-ipam is the CNI IPAM plugin: addresses from Calico's
// pools for main plugins other than calico. It also holds the full calico
// plugin, which the calico front runs (calico-ipam with argv[0] "calico")
// when no agent does the work. See internal/cni and internal/cniagent.
package main

import (
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/calico-go/calico/internal/cni"
	"github.com/calico-go/calico/internal/cniagent"
)

func main() {
	if os.Args[0] == cniagent.FullPluginName {
		skel.PluginMainFuncs(cni.Funcs(), version.All, "calico: Calico-style L3 networking (calico-go)")
		return
	}
	skel.PluginMainFuncs(cni.IPAMFuncs(), version.All, "calico-ipam: addresses from Calico pools (calico-go)")
}
