package netdev

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
)

// HostSide is what the host side of a workload's veth should be. It is the
// one description of a workload interface on the host: AddWorkload and
// AddEngineVeth make it so when they create the pair, and
// WorkloadIfaceSyncer keeps it so on every pass of the agent.
type HostSide struct {
	Name string // cali + 11 hex (api.WorkloadIfaceName)
	MTU  int    // 0 means DefaultMTU
	IPv6 bool   // the workload has IPv6 addresses: the host side routes IPv6 too
}

func (h HostSide) mtu() int {
	if h.MTU == 0 {
		return DefaultMTU
	}
	return h.MTU
}

// sysctls are the host side's settings (hostSideSysctls says why each).
func (h HostSide) sysctls() []sysctl { return hostSideSysctls(h.Name, h.IPv6) }

// prepareHostSide gives a freshly made host side its settings and brings it
// up; netnsPath is the namespace link lives in ("" the caller's own).
// Settings go before the link comes up: addr_gen_mode and accept_dad decide
// how the link-local address (the workloads' IPv6 gateway) is made.
//
// addr_gen_mode goes through netlink, not /proc: its /proc handler takes
// the kernel's global RTNL lock with a trylock that restarts the system
// call until it gets it, reads included, so 20 workloads wired at once
// spun on the lock each other's veth creation held (perf: 45% of the CPU
// of BenchmarkAddWorkload/burst=20 under the sysctl reads and writes).
// Netlink waits for the lock asleep. The syncer still reads it back under
// /proc, once per new host side.
func prepareHostSide(h *netlink.Handle, netnsPath string, link netlink.Link, hs HostSide) error {
	if err := h.LinkSetIP6AddrGenMode(link, nl.IN6_ADDR_GEN_MODE_EUI64); err != nil && hs.IPv6 {
		// Without IPv6 addresses the setting is optional, as under /proc:
		// a kernel without IPv6 refuses it.
		return fmt.Errorf("set %s addrgenmode eui64: %w", hs.Name, err)
	}
	if err := writeSysctls(netnsPath, slices.DeleteFunc(hs.sysctls(), isAddrGenMode)); err != nil {
		return err
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", hs.Name, err)
	}
	return nil
}

func isAddrGenMode(s sysctl) bool { return s.key[len(s.key)-1] == "addr_gen_mode" }

// newHostVeth is the veth request both AddWorkload and AddEngineVeth send:
// the host side with the fixed HostSideMAC and its MTU, the peer named peer.
func newHostVeth(hs HostSide, peer string) *netlink.Veth {
	la := netlink.NewLinkAttrs()
	la.Name = hs.Name
	la.MTU = hs.mtu()
	la.HardwareAddr = hostSideMAC
	return &netlink.Veth{LinkAttrs: la, PeerName: peer, PeerTxQLen: -1} // -1: the kernel's default queue length
}

// WorkloadIfaceSyncer owns the host sides of this host's workload veths, as
// RouteSyncer owns the routes: each Apply compares every wanted host side
// with the kernel and puts back what differs (MTU, up, proxy ARP,
// forwarding, no router advertisements...), so a setting changed by hand
// or lost is restored on the next pass (sysctls: on the next read-back,
// see RecheckEvery).
//
// It never creates a veth: the workload's side lives in another namespace
// that only the entry point making the workload (calicoctl, the Docker
// watcher, the libnetwork driver) knows. A wanted interface that is missing,
// or that is not a veth of ours, is reported and left alone; one that is
// not wanted is not touched either (removing leftovers is the sweeper's
// job).
type WorkloadIfaceSyncer struct {
	o options
	// RecheckEvery, when not zero, spaces the read-back of the sysctls of
	// host sides already found right: each Apply still converges the MTU
	// and link state of every host side (one link dump) and the sysctls of
	// any it has not verified (new, re-created or changed), but reads the
	// others back at most this often. Reading seven /proc/sys files per
	// interface on every pass was half of the agent's CPU time and delayed
	// every new workload's route by a scan of all the others.
	RecheckEvery time.Duration

	verified map[string]verifiedSide // host sides whose sysctls were read back right
	lastFull time.Time               // when every host side's sysctls were last read back
}

// verifiedSide is a host side as last verified: a veth re-created under the
// same name has a new index, so it is verified again.
type verifiedSide struct {
	index int
	hs    HostSide
}

// NewWorkloadIfaceSyncer makes a syncer for the caller's namespace, or
// InNetns(path).
func NewWorkloadIfaceSyncer(opts ...Option) *WorkloadIfaceSyncer {
	return &WorkloadIfaceSyncer{o: buildOptions(opts)}
}

// WorkloadIfaceReport is what one Apply found.
type WorkloadIfaceReport struct {
	// Fixed describes each setting put back, e.g. "cali0123456789a mtu 1400 -> 1500".
	Fixed []string
	// Missing are wanted interfaces that do not exist.
	Missing []string
	// Foreign are wanted names held by something that is not our veth.
	Foreign []string
	// Recheck, when not zero, says the sysctls of some verified host sides
	// were not read back this time (RecheckEvery): Apply again within
	// Recheck to verify them.
	Recheck time.Duration
}

// Apply converges every wanted host side that exists.
func (s *WorkloadIfaceSyncer) Apply(want []HostSide) (WorkloadIfaceReport, error) {
	var rep WorkloadIfaceReport
	if len(want) == 0 {
		return rep, nil
	}
	h, err := openHandle(s.o.netns)
	if err != nil {
		return rep, err
	}
	defer h.Close()
	links, err := retryDump("links", h.LinkList)
	if err != nil {
		return rep, fmt.Errorf("list interfaces: %w", err)
	}
	byName := make(map[string]netlink.Link, len(links))
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}
	full := s.RecheckEvery == 0 || time.Since(s.lastFull) >= s.RecheckEvery
	var errs []error
	var settings []sysctl
	checked := map[string]verifiedSide{}
	skipped := false
	for _, hs := range want {
		l, ok := byName[hs.Name]
		if !ok {
			rep.Missing = append(rep.Missing, hs.Name)
			continue
		}
		a := l.Attrs()
		if l.Type() != "veth" || a.HardwareAddr.String() != HostSideMAC {
			rep.Foreign = append(rep.Foreign, hs.Name)
			continue
		}
		if a.MTU != hs.mtu() {
			if err := h.LinkSetMTU(l, hs.mtu()); err != nil {
				errs = append(errs, fmt.Errorf("set %s mtu %d: %w", hs.Name, hs.mtu(), err))
			} else {
				rep.Fixed = append(rep.Fixed, fmt.Sprintf("%s mtu %d -> %d", hs.Name, a.MTU, hs.mtu()))
			}
		}
		v := verifiedSide{index: a.Index, hs: hs}
		if full || s.verified[hs.Name] != v {
			settings = append(settings, hs.sysctls()...)
			checked[hs.Name] = v
		} else {
			skipped = true
		}
		if a.Flags&net.FlagUp == 0 {
			if err := h.LinkSetUp(l); err != nil {
				errs = append(errs, fmt.Errorf("set %s up: %w", hs.Name, err))
			} else {
				rep.Fixed = append(rep.Fixed, hs.Name+" up")
			}
		}
	}
	fixed, err := convergeSysctls(s.o.netns, settings)
	rep.Fixed = append(rep.Fixed, fixed...)
	errs = append(errs, err)
	s.remember(want, checked, full, err == nil)
	if skipped {
		rep.Recheck = max(s.RecheckEvery-time.Since(s.lastFull), time.Millisecond)
	}
	return rep, errors.Join(errs...)
}

// remember records which host sides Apply verified: those it read back
// (when every read and write succeeded; otherwise all are read again next
// time), and forgets those no longer wanted.
func (s *WorkloadIfaceSyncer) remember(want []HostSide, checked map[string]verifiedSide, full, ok bool) {
	if s.RecheckEvery == 0 {
		return
	}
	keep := make(map[string]verifiedSide, len(want))
	for _, hs := range want {
		if v, found := s.verified[hs.Name]; found && ok {
			keep[hs.Name] = v
		}
	}
	if ok {
		for n, v := range checked {
			keep[n] = v
		}
		if full {
			s.lastFull = time.Now()
		}
	}
	s.verified = keep
}

// convergeSysctls writes the settings whose value differs, in the namespace
// at path, and says which it wrote. A setting whose file is missing is
// skipped: an optional one the kernel lacks, or an interface that went away
// meanwhile (the next pass reports it).
func convergeSysctls(path string, settings []sysctl) (fixed []string, err error) {
	return setSysctls(path, settings, true)
}
