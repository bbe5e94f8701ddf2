package agent

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
)

// ifaceRecheckEvery spaces the full read-back of workload interfaces
// (netdev.WorkloadIfaceSyncer.RecheckEvery): a pass per new workload then
// looks up and reads back only the new one, not every interface on the
// host.
const ifaceRecheckEvery = time.Second

// applyWorkloadIfaces converges the host sides of this host's workload
// veths (MTU, up, the device group their policy is dispatched by, proxy
// ARP, forwarding, no router advertisements) from
// calc's local endpoints, as the route and nftables syncers converge
// theirs: a new or changed interface is converged on this pass, whatever
// was changed by hand or lost on an interface already found right on the
// read-back within a second (ifaceRecheckEvery), which this arms.
// The agent never creates a veth (the workload's side lives in a namespace
// only the entry point that made it knows), so a believed endpoint without
// its interface, or with something else under its name, is a problem line
// in status until it is removed or added again.
func (a *Agent) applyWorkloadIfaces(want []calc.WorkloadIface) (problems []string, err error) {
	problems, _, err = a.convergeWorkloadIfaces(want, a.ifaces.Apply)
	return problems, err
}

// changeWorkloadIfaces is applyWorkloadIfaces for the endpoint pass: it
// converges the new host sides and leaves the others' read-back to the
// next whole pass (netdev.WorkloadIfaceSyncer.ApplyChanged), as the label
// and learned-route passes leave interfaces alone.
func (a *Agent) changeWorkloadIfaces(want []calc.WorkloadIface) (problems []string, err error) {
	problems, _, err = a.convergeWorkloadIfaces(want, a.ifaces.ApplyChanged)
	return problems, err
}

// ifaceAudit is the due read-back of the host sides alone: at 1000
// workloads a whole pass for it (calc, every route, the nft render) cost
// as much again as the read-back, once per new workload. It reads back
// what the last clean pass applied, and says whether that was all: false
// (nothing clean to start from, something put back, an error, problems
// that differ) asks for a whole pass, which also brings back routes that
// a link set down by hand lost.
func (a *Agent) ifaceAudit() bool {
	if a.applied == nil {
		return false
	}
	problems, fixed, err := a.convergeWorkloadIfaces(a.applied.Dataplane.Workloads, a.ifaces.Apply)
	return err == nil && !fixed && slices.Equal(problems, a.ifaceProblems)
}

// hostSides are the host sides of calc's workload interfaces.
func hostSides(want []calc.WorkloadIface) []netdev.HostSide {
	hs := make([]netdev.HostSide, len(want))
	for i, w := range want {
		hs[i] = netdev.HostSide{Name: w.Interface, MTU: w.MTU, IPv6: w.IPv6, Group: w.Group}
	}
	return hs
}

// convergeWorkloadIfaces is applyWorkloadIfaces, saying too whether it put
// anything back.
func (a *Agent) convergeWorkloadIfaces(want []calc.WorkloadIface, apply func([]netdev.HostSide) (netdev.WorkloadIfaceReport, error)) (problems []string, fixed bool, err error) {
	rep, err := apply(hostSides(want))
	if rep.Recheck > 0 {
		a.ifaceRecheck = rearm(a.ifaceRecheck, rep.Recheck, func() {
			select {
			case a.ifaceDue <- struct{}{}:
			default:
			}
		})
	}
	if len(rep.Fixed) > 0 {
		a.log.Info("restored workload interface settings", "changes", rep.Fixed)
	}
	name := func(ifaces []string) string {
		var parts []string
		for i, n := range ifaces {
			if i == 5 {
				parts = append(parts, fmt.Sprintf("and %d more", len(ifaces)-i))
				break
			}
			// Looked up only for a problem: a map of every workload cost
			// each endpoint pass at 1000 endpoints for nothing.
			wl := ""
			if j := slices.IndexFunc(want, func(w calc.WorkloadIface) bool { return w.Interface == n }); j >= 0 {
				wl = want[j].Workload
			}
			parts = append(parts, fmt.Sprintf("%s (%s)", wl, n))
		}
		return strings.Join(parts, ", ")
	}
	if len(rep.Missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d endpoint(s) of this host have no interface: %s; remove them (`calicoctl container remove NAME`) and add them again", len(rep.Missing), name(rep.Missing)))
	}
	if len(rep.Foreign) > 0 {
		problems = append(problems, fmt.Sprintf("%d endpoint(s) of this host find an interface that is not their veth under their name: %s; left alone", len(rep.Foreign), name(rep.Foreign)))
	}
	if !slices.Equal(rep.Missing, a.lastMissing) {
		if len(rep.Missing) > 0 {
			a.log.Warn("endpoints without their interface", "interfaces", rep.Missing)
		}
		a.lastMissing = rep.Missing
	}
	return problems, len(rep.Fixed) > 0, err
}
