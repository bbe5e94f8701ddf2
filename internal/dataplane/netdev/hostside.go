package netdev

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/dataplane/tcx"
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
	// Group is the device group the host side carries (calc.ProfileGroup
	// of its profiles): the policy finds the chains of a workload's
	// profiles by it. 0 leaves the group alone.
	Group uint32
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
	if err := writeHostSysctls(netnsPath, slices.DeleteFunc(hs.sysctls(), isAddrGenMode)); err != nil {
		return err
	}
	// The clsact qdisc the agent's fast path hangs its filter on
	// (tcx.ClsAttach) goes on before the link comes up. Grafting any
	// qdisc, clsact included, on an interface that is up deactivates it for
	// the graft (qdisc_graft: dev_deactivate, then dev_activate), and while it
	// is deactivated it transmits through noop_qdisc, which drops everything.
	// When the agent added the qdisc it did so as it routed the new workload,
	// and the host's first ARP for the workload fell into that window
	// (kfree_skb reason QDISC_DROP in arp_solicit): the workload answered only
	// to the ARP retry a second later, 1 of 200 in every run of the bench's
	// calicoctl bursts of 20, and a TCP connection would have waited for its
	// SYN's retry as long. On an interface still down the graft touches no
	// traffic. The qdisc is part of the host side from then on: an empty
	// clsact costs a packet one pointer test.
	if err := tcx.AddClsact(h.QdiscAdd, link.Attrs().Index); err != nil {
		return fmt.Errorf("%s: %w", hs.Name, err)
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
	// Born with its group: a veth made again under a name the agent's
	// syncer has checked is not looked at again until the next read-back
	// of groups, and its traffic would be dropped until then.
	la.Group = hs.Group
	la.HardwareAddr = hostSideMAC
	return &netlink.Veth{LinkAttrs: la, PeerName: peer, PeerTxQLen: -1} // -1: the kernel's default queue length
}

// WorkloadIfaceSyncer owns the host sides of this host's workload veths, as
// RouteSyncer owns the routes: it compares wanted host sides with the
// kernel and puts back what differs (MTU, up, device group, proxy ARP,
// forwarding, no router advertisements...), so a setting changed by hand
// or lost is restored (see RecheckEvery and groupRecheckEvery for when).
//
// It never creates a veth: the workload's side lives in another namespace
// that only the entry point making the workload (calicoctl, the Docker
// watcher, the libnetwork driver) knows. A wanted interface that is missing,
// or that is not a veth of ours, is reported and left alone; one that is
// not wanted is not touched either (removing leftovers is the sweeper's
// job).
type WorkloadIfaceSyncer struct {
	o options
	// RecheckEvery, when not zero, makes the syncer incremental. An Apply
	// then looks up only the host sides it has not checked yet (new, or
	// wanted differently), and converges them in full (MTU, link state,
	// sysctls); the others are all read back (a few ioctls each, see
	// IfLookup, and every sysctl) by the first Apply RecheckEvery after one that left
	// them unread, and Apply says when that is due
	// (WorkloadIfaceReport.Recheck). The first Apply checks the
	// MTU and link state of every host side at once but leaves their
	// sysctls (set when each veth was made) for that read-back.
	//
	// Why: at 1000 workloads the link dump alone was a quarter of the
	// agent's CPU per new workload (the kernel resolves every veth's peer
	// namespace, a walk of all namespace ids, so the dump grows with the
	// square of the workloads), and reading seven /proc/sys files per
	// interface half of it before the read-back was spaced out (links are
	// now looked up by ioctl, which walks nothing). With RecheckEvery
	// zero every Apply reads everything back.
	RecheckEvery time.Duration

	// checked are the host sides converged since the last full read-back,
	// as wanted then. A veth re-created under a checked name (a new index)
	// is found by the full read-back, as a hand edit is.
	checked map[string]HostSide
	// due is when the full read-back is due (zero: none pending). It is
	// set RecheckEvery after an Apply that left checked host sides unread,
	// so an Apply that finds something new after a quiet spell converges
	// only that, and the read-back follows on its own.
	due     time.Time
	started bool // an Apply has looked at every host side once
	// groupsRead is when a full read-back last read every host side's
	// device group (groupRecheckEvery).
	groupsRead time.Time
	// groupsSet are the groups SetGroups converged, which the first
	// Apply after it need not read again (about half the agent's cold
	// start work on groups next to 1000 workloads).
	groupsSet map[string]uint32
}

// groupRecheckEvery spaces the read-back of the host sides' device groups
// when the syncer is incremental. A group is read with a netlink get of
// the link, whose kernel side looks up the veth peer's namespace id by
// walking every id the host holds (one per workload namespace): 1000 of
// those per full read-back cost the idle agent 10-15 ms of CPU per second
// next to 1000 workloads. New and changed host sides are read at once; a
// group changed by hand on another is put back within this time, its
// traffic dropped meanwhile (fail closed, see convergeGroup).
const (
	groupRecheckEvery = 30 * time.Second
	groupRecheckSlack = 5 * time.Second
)

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
	// Recheck, when not zero, says some host sides were not read back this
	// time (RecheckEvery): Apply again within Recheck to verify them.
	Recheck time.Duration
}

// Apply converges the wanted host sides that exist: every one, or with
// RecheckEvery only those not checked yet (see RecheckEvery).
func (s *WorkloadIfaceSyncer) Apply(want []HostSide) (WorkloadIfaceReport, error) {
	return s.apply(want, true)
}

// ApplyChanged is Apply for a change of a few host sides (a workload
// started or stopped): with RecheckEvery, after a first Apply, it
// converges only the host sides not checked yet and, unlike Apply, does
// not make the full read-back of the others due: nothing about them
// changed, and at 1000 workloads that read-back (then a link dump whose kernel
// cost grows with the square of the workloads, seven sysctls each) cost
// ten times the change. A read-back already due still is (Recheck says
// when). Without RecheckEvery, or before any Apply, it is Apply.
func (s *WorkloadIfaceSyncer) ApplyChanged(want []HostSide) (WorkloadIfaceReport, error) {
	if s.RecheckEvery == 0 || !s.started {
		return s.apply(want, true)
	}
	return s.apply(want, false)
}

func (s *WorkloadIfaceSyncer) apply(want []HostSide, arm bool) (WorkloadIfaceReport, error) {
	var rep WorkloadIfaceReport
	if len(want) == 0 {
		// Nothing checked is wanted any more: a veth made again under one
		// of those names is new.
		s.checked = nil
		return rep, nil
	}
	incremental := s.RecheckEvery > 0
	full := !incremental || !s.due.IsZero() && !time.Now().Before(s.due)
	first := incremental && !s.started
	if first {
		full = false // every host side is looked at, its sysctls later
	}
	// todo: the host sides this Apply looks at.
	todo := want
	if !full && !first {
		todo = nil
		for _, hs := range want {
			if c, ok := s.checked[hs.Name]; !ok || c != hs {
				todo = append(todo, hs)
			}
		}
	}
	skipped := len(todo) < len(want) || first
	var errs []error
	var settings []sysctl
	checked := map[string]HostSide{}
	// Device groups: see groupRecheckEvery. The slack lets the read-back
	// a resync arms every 30 s read them, not the one after.
	readGroups := !incremental || !full && !first || time.Since(s.groupsRead) >= groupRecheckEvery-groupRecheckSlack
	if incremental && (full || first) && readGroups {
		s.groupsRead = time.Now()
	}
	if len(todo) > 0 {
		h, err := openHandle(s.o.netns)
		if err != nil {
			return rep, err
		}
		defer h.Close()
		links, err := NewIfLookup(s.o.netns)
		if err != nil {
			return rep, err
		}
		defer links.Close()
		for _, hs := range todo {
			l, err := links.find(hs.Name)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if l == nil {
				rep.Missing = append(rep.Missing, hs.Name)
				continue
			}
			a := l.Attrs()
			if !ourVeth(l) {
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
			if a.Flags&net.FlagUp == 0 {
				if err := h.LinkSetUp(l); err != nil {
					errs = append(errs, fmt.Errorf("set %s up: %w", hs.Name, err))
				} else {
					rep.Fixed = append(rep.Fixed, hs.Name+" up")
				}
			}
			c, ok := s.checked[hs.Name]
			justSet := s.groupsSet[hs.Name] == hs.Group // by SetGroups, just before
			if hs.Group != 0 && !justSet && (readGroups || !ok || c.Group != hs.Group) {
				// Without a record of what was converged (RecheckEvery 0),
				// any group but a fresh veth's counts as a repair.
				gone, err := convergeGroup(h, s.o.netns, l, hs, ok && c.Group == hs.Group || !incremental, &rep)
				if gone {
					continue // the next Apply finds it missing, or made again
				}
				errs = append(errs, err)
			}
			if !first {
				settings = append(settings, hs.sysctls()...)
			}
			checked[hs.Name] = hs
		}
	}
	if len(todo) > bulkSysctlThreshold && len(settings) > 0 {
		// The read-back of many host sides: what netlink shows holding
		// the wanted value needs no read of its file (bulkSysctls).
		var known map[string]string
		_ = runInNetns(s.o.netns, func() error { known = bulkSysctls(); return nil })
		settings = slices.DeleteFunc(settings, func(st sysctl) bool {
			v, ok := known[sysctlPath(st.key)]
			return ok && v == st.value
		})
	}
	fixed, err := convergeSysctls(s.o.netns, settings)
	rep.Fixed = append(rep.Fixed, fixed...)
	errs = append(errs, err)
	ok := errors.Join(errs...) == nil
	s.groupsSet = nil
	s.remember(want, checked, full, first, ok)
	if skipped && (arm || !s.due.IsZero()) {
		if s.due.IsZero() {
			s.due = time.Now().Add(s.RecheckEvery)
		}
		rep.Recheck = max(time.Until(s.due), time.Millisecond)
	}
	return rep, errors.Join(errs...)
}

// convergeGroup gives host side l the device group hs wants; gone: the
// link went meanwhile. Setting a group is reported as putting it back
// only when it had been converged to this one (converged): someone else
// changed it, and the policy dropped the interface's traffic meanwhile
// (nft dispatches by a group only for an endpoint's interface and group).
// A veth made before groups, or a profile list changed, is no repair.
func convergeGroup(h *netlink.Handle, netnsPath string, l netlink.Link, hs HostSide, converged bool, rep *WorkloadIfaceReport) (gone bool, err error) {
	cur, ok := sysfsGroup(netnsPath, l)
	if !ok {
		lk, err := h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			if errors.As(err, &netlink.LinkNotFoundError{}) {
				return true, nil
			}
			return false, fmt.Errorf("read %s group: %w", hs.Name, err)
		}
		cur = lk.Attrs().Group
	}
	if cur == hs.Group {
		return false, nil
	}
	if err := h.LinkSetGroup(l, int(hs.Group)); err != nil {
		return false, fmt.Errorf("set %s group %d: %w", hs.Name, hs.Group, err)
	}
	if converged && cur != 0 {
		rep.Fixed = append(rep.Fixed, fmt.Sprintf("%s group %d -> %d", hs.Name, cur, hs.Group))
	}
	return false, nil
}

// ourVeth says whether l is a host side we made: a veth with HostSideMAC.
func ourVeth(l netlink.Link) bool {
	return l.Type() == "veth" && l.Attrs().HardwareAddr.String() == HostSideMAC
}

// sysfsGroup reads l's device group from /sys/class/net when the caller
// works in its own namespace (netnsPath "") and /sys shows that namespace
// (the interface there has l's index): a netlink get of a veth makes the
// kernel look up its peer's namespace id by walking every id the host
// holds, one per workload namespace, and 2000 of those (the first pass
// and the first read-back, next to 1000 workloads) made the agent's cold
// start 0.6 -> 1.3 s. false: read it by netlink.
func sysfsGroup(netnsPath string, l netlink.Link) (uint32, bool) {
	if netnsPath != "" {
		return 0, false
	}
	dir := "/sys/class/net/" + l.Attrs().Name + "/"
	idx, err := readUint(dir + "ifindex")
	if err != nil || idx != uint64(l.Attrs().Index) {
		return 0, false
	}
	g, err := readUint(dir + "netdev_group")
	if err != nil || g > math.MaxUint32 {
		return 0, false
	}
	return uint32(g), true
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// SetGroups gives every existing host side of want the device group it
// wants, and nothing else: the agent's first pass runs it before the
// first policy write, which dispatches by groups, so veths made before
// the agent kept groups (an upgrade) are not cut off until the first
// whole pass reaches them. A host side missing or not ours is left to
// Apply to report.
func (s *WorkloadIfaceSyncer) SetGroups(want []HostSide) error {
	if len(want) == 0 {
		return nil
	}
	h, err := openHandle(s.o.netns)
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := NewIfLookup(s.o.netns)
	if err != nil {
		return err
	}
	defer links.Close()
	var errs []error
	var rep WorkloadIfaceReport
	s.groupsSet = make(map[string]uint32, len(want))
	for _, hs := range want {
		if hs.Group == 0 {
			continue
		}
		l, err := links.find(hs.Name)
		if err != nil || l == nil || !ourVeth(l) {
			errs = append(errs, err)
			continue
		}
		gone, err := convergeGroup(h, s.o.netns, l, hs, false, &rep)
		if err == nil && !gone {
			s.groupsSet[hs.Name] = hs.Group
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// remember records which host sides Apply checked. A full Apply's are all
// there are; an incremental one adds its own to those checked before that
// are still wanted as they were. After a failure nothing is remembered
// and the next Apply reads everything back.
func (s *WorkloadIfaceSyncer) remember(want []HostSide, checked map[string]HostSide, full, first, ok bool) {
	if s.RecheckEvery == 0 {
		return
	}
	if !ok {
		s.checked, s.due, s.started = nil, time.Now(), true
		return
	}
	s.started = true
	if full || first {
		s.checked = checked
		s.due = time.Time{} // first: Apply sets it, the sysctls are read back when due
		return
	}
	// Usually only host sides were added or changed (one new container):
	// update the record in place. Only when some host side it holds is no
	// longer wanted as it was is it rebuilt (at 1000 endpoints, rebuilding
	// it on each new container was most of this syncer's cost).
	still := 0
	for _, hs := range want {
		if c, found := s.checked[hs.Name]; found && c == hs {
			still++
		}
	}
	if still < len(s.checked) {
		keep := make(map[string]HostSide, len(want))
		for _, hs := range want {
			if c, found := s.checked[hs.Name]; found && c == hs {
				keep[hs.Name] = c
			}
		}
		s.checked = keep
	}
	if s.checked == nil {
		s.checked = make(map[string]HostSide, len(checked))
	}
	for n, v := range checked {
		s.checked[n] = v
	}
}

// convergeSysctls writes the settings whose value differs, in the namespace
// at path, and says which it wrote. A setting whose file is missing is
// skipped: an optional one the kernel lacks, or an interface that went away
// meanwhile (the next pass reports it).
func convergeSysctls(path string, settings []sysctl) (fixed []string, err error) {
	return setSysctls(path, settings, true, true)
}
