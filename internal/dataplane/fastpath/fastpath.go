// Package fastpath owns a host's eBPF fast path for flows that nftables has
// already accepted: two tc programs (fastpath.c), on the ingress of every
// workload interface (a cls_bpf filter) and of the uplink and vxlan.calico
// (tcx), which move packets
// of ESTABLISHED, policy-accepted, un-NATed IPv4 TCP flows straight to their
// next device (bpf_redirect_peer into a local workload's namespace,
// bpf_redirect out of the uplink or into a tunnel device's egress, where
// ipip.calico's program or the vxlan driver encapsulates as on the normal
// path), skipping the veth backlog, routing and netfilter. Every
// policy decision stays where it is made (nftables): a flow's first
// packets go the normal way, and only a confirmed, assured conntrack entry
// without NAT lets later packets take the short cut.
//
// On by default (calico-node turns it off with CALICO_FASTPATH=off): it is
// what brings the ruleset's per-packet cost within issue 19's 2% of no
// ruleset (the bench's policy-cost ablation: saved ruleset 0.92-0.94 of no
// ruleset in Gbit/s, 1.05-1.10x the CPU per GB; with the fast path 1.00 and
// 1.02-1.03x), and that cost is conntrack's, which stateful policy in
// netfilter cannot drop. Its own A/B against the normal path with real
// agents (TestMeasureCPUPerGB, 48 paired rounds, 2026-12-03) gave 0.961x the
// CPU per GB across hosts (95% interval 0.928-0.995). The gain is modest
// because the forwarding path works per GSO superpacket (about 56 KB each,
// 18k per GB): what the fast path skips (netfilter, a second backlog) is
// small next to the copies between user and kernel and TCP, which
// host-to-host pays too; its own conntrack and FIB lookups take back 1.5%.
//
// Tunnels (2026-12-04, calico-bench --only ipip and --only vxlan, two runs
// of 12 alternating paired rounds, the fast path attached per run beside
// the same path without it, on a machine with load average 6 on 2 cores;
// geometric means of the 24 on/off ratios, 95% intervals): IPIP CPU per GB
// 0.96 (0.89-1.03) at 1 stream and 0.94 (0.90-0.98) at 4, Gbit/s 1.15
// (1.01-1.31) and 1.14 (0.91-1.48); VXLAN CPU per GB 0.97 (0.89-1.06) and
// 0.93 (0.88-0.98), Gbit/s 1.05 and 1.06 (intervals across 1). The same
// cause holds: what is skipped (netfilter about 3% of the samples, a
// routing pass, a backlog) is small beside the copies and TCP. Into a
// tunnel the packet is redirected to the tunnel device's egress rather
// than encapsulated here: that keeps one owner of the encapsulation
// (internal/dataplane/ipip, the vxlan driver), and what encapsulating here
// could save is small: the whole ipip_encap program (its FIB lookup
// included) takes 0.3% of the IPIP flow's CPU samples, and
// __dev_queue_xmit 0.4% more than on the unencapsulated path (perf record
// -a -g, 1 stream; that includes the extra pass through ipip.calico).
//
// Why it is shaped like this:
//
//   - The prerouting chain from-wl-src (anti-spoofing) runs after tc
//     ingress, so a redirected packet would skip it. The programs check
//     (ingress ifindex, source) against fp_wl_src, kept here from the same
//     desired state as the nftables set wl-src4; a mismatch goes the normal
//     way, where nftables drops it.
//   - From the uplink nothing vouches for the source, and the routing the
//     programs skip is where the normal path drops a packet from outside
//     with one of the host's own addresses as its source (a martian) or,
//     with strict rp_filter, one it routes elsewhere. fp_from_uplink
//     therefore fast-paths only a source the FIB routes back out of the
//     uplink (a second, reverse lookup); anything else goes the normal way.
//   - Fast-pathed packets skip conntrack, so its TCP window bookkeeping goes
//     stale: the connection's FIN, which goes the normal way, would then be
//     out of window, "ct state invalid" and dropped. Apply therefore sets
//     net.netfilter.nf_conntrack_tcp_be_liberal=1 in the host's namespace
//     while the fast path is on (state tracking stays; only the window
//     check is skipped). The operator's value from before is kept in
//     fp_config, beside the programs, so an agent restarted since still
//     knows it; teardown puts it back if the sysctl still holds our 1, and
//     leaves an operator's 1 (or a later change) alone.
//   - The programs refresh a fast-pathed flow's conntrack timeout (the
//     entry would otherwise expire under a busy flow) to the host's
//     nf_conntrack_tcp_timeout_established, which Apply reads into
//     fp_config every time, so an operator's shorter (or longer) timeout
//     holds for these flows too.
//   - The uplink's and vxlan.calico's program is attached with tcx's program
//     API (BPF_PROG_ATTACH), as ipip's are; a workload interface's is a
//     cls_bpf filter on a clsact qdisc, because a tcx attach holds RTNL for
//     an RCU grace period (10.9 ms here against 0.45 ms, and a veth made
//     meanwhile took 38.7 ms against 1.5: BenchmarkAttachIngress), and a
//     burst of container starts made every next veth and route wait behind
//     the previous workloads' attaches (in-process bursts of 20: p99 to
//     reachable 225-389 ms with tcx). Both stay when the agent exits and go
//     with their interfaces. A starting agent finds its predecessor's
//     programs by name, reuses their maps and replaces the programs in one
//     step (attach before detach: no packet passes between the two); an
//     earlier build's fp_from_wl on tcx goes once the filter is in place.
package fastpath

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/dataplane/tcx"
)

// Program names as the kernel reports them (at most 15 characters); progWL
// names its tc filters too.
const (
	progWL     = "fp_from_wl"
	progUplink = "fp_from_uplink"
)

// wlPrio is the priority of fp_from_wl's filter on a workload interface's
// ingress: late, after any filter an operator adds with tc's default
// (0xc000), as tcx's tail is after the others.
const wlPrio = 0xfe00

// Values of fp_ifaces, as in fastpath.c.
const (
	ifaceWorkload uint32 = 1
	ifaceUplink   uint32 = 2
	ifaceIPIP     uint32 = 3
	ifaceVXLAN    uint32 = 4
)

// The tunnel devices whose traffic the programs handle when they exist
// (internal/dataplane/ipip and the agent's VXLAN device own them; the fast
// path only reads their ifindex and attaches to vxlan.calico's ingress).
var (
	ipipDevice  = calc.IPIPBPFDevice
	vxlanDevice = api.VXLANDevice
)

// Counter slots, as enum STAT_ in fastpath.c.
var statNames = []string{
	"fwd_workload", "fwd_uplink", "pass_not_tcp", "pass_spoof",
	"pass_no_ct", "pass_ct_state", "pass_fib", "pass_ttl", "fwd_tunnel",
}

// The sysctls the fast path reads and sets, in the namespace of the thread
// that calls Apply.
const (
	beLiberal     = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"
	ctEstablished = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established"
)

// Slots of fp_config, as enum CONFIG_ in fastpath.c.
const (
	configCTEstablishedMS uint32 = 0
	// configSavedLiberal: the operator's nf_conntrack_tcp_be_liberal plus
	// one, from before the fast path set it to 1; 0 when it did not (it
	// was 1 already, the operator's).
	configSavedLiberal uint32 = 1
)

// Workload is one local workload interface and the IPv4 addresses it may
// send from.
type Workload struct {
	Iface string
	Addrs []netip.Addr
}

// Desired is what the fast path should look like.
type Desired struct {
	Enabled bool
	// LocalIP is the host's address; its interface is the uplink.
	LocalIP   netip.Addr
	Workloads []Workload
}

// Manager converges one host's fast path to a Desired. It works in the
// network namespace of the thread that calls it. Safe for concurrent use.
type Manager struct {
	mu       sync.Mutex
	objs     *fastpathObjects
	attached map[string]int // workload interface -> ifindex this process attached to
	scanned  bool           // every interface was searched for a predecessor's programs
	status   string
	// idle: objs are loaded but attached nowhere, since a clean teardown
	// for want of workloads (kept so that the next first workload does not
	// wait for the verifier: loading takes 40-47 ms of the agent loop,
	// which every route of a burst of container starts waited behind).
	idle bool
	// What this process last wrote to fp_ifaces and fp_wl_src, whole; nil:
	// not known (new objects, or a write failed), and the next Apply reads
	// the map. The maps are ours alone, so the next Apply writes only the
	// difference: reading them back entry by entry (two syscalls each) on
	// every container start was most of an Apply's cost next to 1000
	// workloads.
	haveIfaces map[uint32]uint32
	haveSrc    map[fastpathWlSrcKey]uint32
	// What the last whole Apply, and the ApplyChange calls since, made of
	// each workload interface; nil when there is no clean whole Apply to
	// change from (none yet, or an error or teardown since). ApplyChange
	// works from it, for the host address local and the uplink upName.
	wl       map[string]wlState
	local    netip.Addr
	upStatus string // the uplink (and vxlan.calico) named in status
}

// wlState is one workload interface as an Apply left it: the index its
// entries and program were put on, and its sources (Desired's list, which
// nothing writes to).
type wlState struct {
	idx   int
	addrs []netip.Addr
}

// New returns a manager; it touches nothing until Apply.
func New() *Manager { return &Manager{attached: map[string]int{}} }

// Close releases this process's handles. Attached programs stay.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeObjs()
}

func (m *Manager) closeObjs() {
	if m.objs != nil {
		m.objs.Close()
		m.objs = nil
	}
	m.idle = false
	m.haveIfaces, m.haveSrc, m.wl = nil, nil, nil
}

// syncFrom makes mp hold want. With have (what this process last wrote
// there) it writes only the difference; without, it reads the map first.
// On success have becomes want (which the caller built for this call and
// does not keep); on a failure nil, so the next call reads the map again.
func syncFrom[K comparable, V comparable](mp *ebpf.Map, want map[K]V, have *map[K]V) error {
	if *have == nil {
		if err := tcx.SyncMap(mp, want, false); err != nil {
			return err
		}
		*have = want
		return nil
	}
	if err := tcx.WriteDiff(mp, want, *have, false); err != nil {
		*have = nil
		return err
	}
	*have = want
	return nil
}

// Status is one line for `calicoctl status`: whether the fast path is on.
func (m *Manager) Status() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.status == "" {
		return "off"
	}
	return m.status
}

// Apply makes the kernel match d. Enabled: the maps hold d's interfaces
// and sources, the programs are attached to every workload interface of d
// and to the uplink. Disabled: our programs are detached everywhere. On an
// error the fast path is taken down (everything then goes the normal way,
// which is always correct).
func (m *Manager) Apply(d Desired) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if d.Enabled {
		if err = m.apply(d); err != nil {
			err = errors.Join(err, m.teardown(false))
		}
	} else {
		err = m.teardown(true)
	}
	return err
}

func (m *Manager) apply(d Desired) error {
	m.wl = nil // until this Apply is through
	m.idle = false
	if !d.LocalIP.Is4() {
		return errors.New("the eBPF fast path needs this host's IPv4 address")
	}
	_, upName, err := netdev.HostIPPrefix(d.LocalIP)
	if err != nil {
		return fmt.Errorf("find the uplink: %w", err)
	}
	uplink, err := netlink.LinkByName(upName)
	if err != nil {
		return fmt.Errorf("find the uplink %s: %w", upName, err)
	}
	if m.objs == nil {
		reuse := tcx.ExistingMaps(uplink.Attrs().Index, ebpf.AttachTCXIngress, progUplink, "fp_wl_src", "fp_ifaces", "fp_stats", "fp_config")
		objs, err := load(reuse)
		for _, mp := range reuse {
			mp.Close()
		}
		if err != nil {
			return err
		}
		m.objs = objs
	}
	ms, err := establishedTimeoutMS()
	if err != nil {
		return err
	}
	if err := m.objs.FpConfig.Put(configCTEstablishedMS, ms); err != nil {
		return fmt.Errorf("fp_config: %w", err)
	}
	// The outer source of the IPIP packets the program encapsulates
	// itself: the node's address, as ipip_encap's local_ip (0 when there
	// is none: packets routed into ipip.calico are redirected there).
	var ipipSrc uint32
	if d.LocalIP.Is4() {
		ipipSrc = nativeOf(d.LocalIP.As4())
	}
	if err := m.objs.FpIpipSrc.Put(uint32(0), ipipSrc); err != nil {
		return fmt.Errorf("fp_ipip_src: %w", err)
	}
	// Which interfaces exist now; a workload whose interface is not there
	// yet gets its programs on a later Apply.
	wantIfaces := map[uint32]uint32{uint32(uplink.Attrs().Index): ifaceUplink}
	wantSrc := map[fastpathWlSrcKey]uint32{}
	wlIndex := map[string]int{}
	wl := make(map[string]wlState, len(d.Workloads))
	// Interface indexes by ioctl: the endpoint pass applies the fast path
	// on every container start, and netlink.LinkByName (a request and a
	// whole link message parsed per workload) was 70% of a steady Apply's
	// 28 ms CPU at 500 workloads.
	ifs, err := netdev.NewIfLookup("")
	if err != nil {
		return err
	}
	defer ifs.Close()
	for _, w := range d.Workloads {
		idx, ok := ifindex(ifs, w.Iface)
		if !ok {
			continue
		}
		wlIndex[w.Iface] = idx
		st := wl[w.Iface]
		if st.addrs != nil {
			// Listed twice: both lists' sources are in fp_wl_src, and
			// ApplyChange must know both to take them out.
			st.addrs = append(slices.Clip(st.addrs), w.Addrs...)
		} else {
			st.addrs = w.Addrs
		}
		st.idx = idx
		wl[w.Iface] = st
		wantIfaces[uint32(idx)] = ifaceWorkload
		for _, a := range w.Addrs {
			if a.Is4() {
				b := a.As4()
				// The program compares the packet's bytes as read: the
				// key holds the address in network order.
				wantSrc[fastpathWlSrcKey{Ifindex: uint32(idx), Addr: nativeOf(b)}] = 1
			}
		}
	}
	// Tunnel devices that exist now: packets routed into them may be
	// redirected there, and vxlan.calico's decapsulated packets get
	// fp_from_uplink (ipip.calico receives nothing: IPIP is decapsulated on
	// the uplink's ingress, before fp_from_uplink runs there). A device
	// made later is picked up by the next Apply, which the agent makes
	// after every dataplane pass that could have made it.
	if idx, ok := ifindex(ifs, ipipDevice); ok {
		wantIfaces[uint32(idx)] = ifaceIPIP
	}
	vxlan, haveVXLAN := ifindex(ifs, vxlanDevice)
	if haveVXLAN {
		wantIfaces[uint32(vxlan)] = ifaceVXLAN
	}
	// Maps first: a program attached now must find its entries.
	if err := errors.Join(syncFrom(m.objs.FpIfaces, wantIfaces, &m.haveIfaces), syncFrom(m.objs.FpWlSrc, wantSrc, &m.haveSrc)); err != nil {
		return err
	}
	if err := tcx.Attach(uplink.Attrs().Index, ebpf.AttachTCXIngress, progUplink, m.objs.FpFromUplink, link.Tail()); err != nil {
		return fmt.Errorf("attach %s to %s ingress: %w", progUplink, upName, err)
	}
	if haveVXLAN {
		if err := tcx.Attach(vxlan, ebpf.AttachTCXIngress, progUplink, m.objs.FpFromUplink, link.Tail()); err != nil {
			return fmt.Errorf("attach %s to %s ingress: %w", progUplink, vxlanDevice, err)
		}
	}
	// After the uplink program is attached: fp_config, where the
	// operator's value is saved, then outlives this process.
	if err := setLiberal(m.objs.FpConfig); err != nil {
		return err
	}
	names := make([]string, 0, len(wlIndex))
	for n := range wlIndex {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if m.attached[n] == wlIndex[n] {
			continue // attached by this process to this very interface
		}
		if err := tcx.ClsAttach(wlIndex[n], progWL, wlPrio, m.objs.FpFromWl); err != nil {
			return fmt.Errorf("attach %s to %s ingress: %w", progWL, n, err)
		}
		m.attached[n] = wlIndex[n]
	}
	// Interfaces no longer wanted: the ones this process attached to, and
	// on the first Apply whatever a predecessor left anywhere.
	stale := map[string]bool{}
	for n := range m.attached {
		stale[n] = true
	}
	if !m.scanned {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list interfaces: %w", err)
		}
		for _, l := range links {
			idx := l.Attrs().Index
			if ids, _ := tcx.ClsAttached(idx, progWL); len(ids) > 0 {
				stale[l.Attrs().Name] = true
			}
			// A predecessor of an earlier build attached fp_from_wl with
			// tcx: off every interface, the wanted ones' now that their
			// filter (attached above) takes the packets after it.
			if err := tcx.Detach(idx, ebpf.AttachTCXIngress, progWL); err != nil {
				return err
			}
		}
		m.scanned = true
	}
	for n := range stale {
		if _, ok := wlIndex[n]; ok {
			continue
		}
		if l, err := netlink.LinkByName(n); err == nil {
			if err := tcx.ClsDetach(l.Attrs().Index, progWL); err != nil {
				return err
			}
		}
		delete(m.attached, n)
	}
	on := upName
	if haveVXLAN {
		on += " and " + vxlanDevice
	}
	m.wl, m.local, m.upStatus = wl, d.LocalIP, on
	m.setStatus()
	return nil
}

func (m *Manager) setStatus() {
	m.status = fmt.Sprintf("on (tcx ingress: %s on %s; tc ingress: %s on %d workload interfaces)", progUplink, m.upStatus, progWL, len(m.wl))
}

// ApplyChange is Apply for a change of a few workloads, as the agent's
// endpoint pass makes on a container start or stop: ifaces names the
// workload interfaces that came, went or changed their sources, and now
// holds those of them still wanted (Desired's Workloads, those names
// only). Only their fp_ifaces and fp_wl_src entries (the difference from
// what this process wrote for them) and their programs are touched:
// Apply looks up every workload's index (an ioctl each), builds and
// compares maps of every entry, checks every attachment, re-attaches to
// the uplink and reads two sysctls, which at 1000 workloads cost 3.2 ms of
// CPU per container start against 1.2 ms at 10 (BenchmarkApplyOneMore).
// The uplink, the tunnel devices and the conntrack sysctls are left to
// the next Apply (the agent's every whole pass). It returns false,
// having done nothing, when a whole Apply is needed: none clean to
// change from (none yet, an error or teardown since) or another host
// address. On an error the fast path is taken down, as by Apply.
func (m *Manager) ApplyChange(local netip.Addr, ifaces []string, now []Workload) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wl == nil || m.objs == nil || m.haveIfaces == nil || m.haveSrc == nil || local != m.local {
		return false, nil
	}
	if err := m.change(ifaces, now); err != nil {
		return true, errors.Join(err, m.teardown(false))
	}
	return true, nil
}

func (m *Manager) change(ifaces []string, now []Workload) error {
	ifs, err := netdev.NewIfLookup("")
	if err != nil {
		return err
	}
	defer ifs.Close()
	type step struct {
		name      string
		old, cur  wlState
		had, want bool
	}
	var steps []step
	// The entries of the changed interfaces as they are (have) and are to
	// be (want): the difference is what is written.
	haveI, wantI := map[uint32]uint32{}, map[uint32]uint32{}
	haveS, wantS := map[fastpathWlSrcKey]uint32{}, map[fastpathWlSrcKey]uint32{}
	for _, n := range ifaces {
		if slices.ContainsFunc(steps, func(s step) bool { return s.name == n }) {
			continue
		}
		st := step{name: n}
		st.old, st.had = m.wl[n]
		for _, w := range now {
			if w.Iface != n {
				continue
			}
			// As Apply: an interface that is not there (yet) is not
			// wanted; the addresses of a name listed twice add up.
			if idx, ok := ifindex(ifs, n); ok {
				st.cur.idx, st.want = idx, true
				st.cur.addrs = append(slices.Clip(st.cur.addrs), w.Addrs...)
			}
		}
		if st.had {
			// Only a workload's entry: an index the uplink or a tunnel
			// now has is theirs. An entry of another workload under the
			// same index (reused since, which takes the kernel 2^31 new
			// interfaces) may go too: that only sends its packets the
			// normal way until the next Apply puts it back.
			if m.haveIfaces[uint32(st.old.idx)] == ifaceWorkload {
				haveI[uint32(st.old.idx)] = ifaceWorkload
			}
			for _, k := range srcKeys(st.old) {
				if _, ok := m.haveSrc[k]; ok {
					haveS[k] = 1
				}
			}
		}
		if st.want {
			wantI[uint32(st.cur.idx)] = ifaceWorkload
			for _, k := range srcKeys(st.cur) {
				wantS[k] = 1
			}
		}
		steps = append(steps, st)
	}
	// have must say what the map holds for every key written: a key both
	// wanted and held elsewhere (say a workload's new index an old entry
	// of the uplink's) is compared with that.
	for k := range wantI {
		if v, ok := m.haveIfaces[k]; ok {
			haveI[k] = v
		}
	}
	for k := range wantS {
		if v, ok := m.haveSrc[k]; ok {
			haveS[k] = v
		}
	}
	// Maps first, as in Apply: a program attached now must find its
	// entries, and a source that left an interface must be gone from
	// fp_wl_src before anything else (the address may be the next
	// holder's already).
	if err := errors.Join(tcx.WriteDiff(m.objs.FpIfaces, wantI, haveI, false), tcx.WriteDiff(m.objs.FpWlSrc, wantS, haveS, false)); err != nil {
		m.haveIfaces, m.haveSrc, m.wl = nil, nil, nil
		return err
	}
	for k := range haveI {
		if _, ok := wantI[k]; !ok {
			delete(m.haveIfaces, k)
		}
	}
	maps.Copy(m.haveIfaces, wantI)
	for k := range haveS {
		if _, ok := wantS[k]; !ok {
			delete(m.haveSrc, k)
		}
	}
	maps.Copy(m.haveSrc, wantS)
	for _, st := range steps {
		if st.want {
			m.wl[st.name] = st.cur
		} else {
			delete(m.wl, st.name)
		}
	}
	for _, st := range steps {
		switch {
		case st.want && m.attached[st.name] != st.cur.idx:
			if err := tcx.ClsAttach(st.cur.idx, progWL, wlPrio, m.objs.FpFromWl); err != nil {
				return fmt.Errorf("attach %s to %s ingress: %w", progWL, st.name, err)
			}
			m.attached[st.name] = st.cur.idx
		case !st.want:
			if _, ok := m.attached[st.name]; !ok {
				break
			}
			// Gone from the desired state but maybe still there (a
			// record removed before its veth): as Apply's stale ones.
			if idx, ok := ifindex(ifs, st.name); ok {
				if err := tcx.ClsDetach(idx, progWL); err != nil {
					return err
				}
			}
			delete(m.attached, st.name)
		}
	}
	m.setStatus()
	return nil
}

// srcKeys are fp_wl_src's keys for one workload interface.
func srcKeys(st wlState) []fastpathWlSrcKey {
	var ks []fastpathWlSrcKey
	for _, a := range st.addrs {
		if a.Is4() {
			// The program compares the packet's bytes as read: the key
			// holds the address in network order.
			ks = append(ks, fastpathWlSrcKey{Ifindex: uint32(st.idx), Addr: nativeOf(a.As4())})
		}
	}
	return ks
}

// teardown detaches our programs from every interface (the uplink may have
// changed since they were attached, so all are searched) and sets the
// conntrack window check back. With keep (the fast path is not wanted, as
// when a host's last workload goes) our loaded objects stay for the next
// Apply; after an error they are closed.
func (m *Manager) teardown(keep bool) error {
	if m.status == "" && m.scanned && (m.objs == nil || m.idle) {
		return nil // nothing of ours was left the last time we looked
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	// What the operator had, read before the programs (and fp_config with
	// them) go: from our own map, else from a predecessor's.
	saved := savedLiberal(m.objs)
	var errs []error
	for _, l := range links {
		if saved == 0 && m.objs == nil {
			if mp := tcx.ExistingMaps(l.Attrs().Index, ebpf.AttachTCXIngress, progUplink, "fp_config")["fp_config"]; mp != nil {
				saved = savedLiberalIn(mp)
				mp.Close()
			}
		}
		// progWL with tcx too: what an earlier build attached.
		for _, name := range []string{progWL, progUplink} {
			errs = append(errs, tcx.Detach(l.Attrs().Index, ebpf.AttachTCXIngress, name))
		}
		errs = append(errs, tcx.ClsDetach(l.Attrs().Index, progWL))
	}
	errs = append(errs, restoreLiberal(saved))
	clear(m.attached)
	m.status = ""
	err = errors.Join(errs...)
	m.idle = false
	if keep && err == nil && m.objs != nil {
		// Loaded, attached nowhere: the operator's value is back, so
		// nothing is saved any more (the next setLiberal saves afresh),
		// and the next Apply reads the maps whole and writes them before
		// it attaches anything.
		err = m.objs.FpConfig.Put(configSavedLiberal, uint32(0))
		m.haveIfaces, m.haveSrc, m.wl = nil, nil, nil
		m.idle = err == nil
	}
	if !m.idle {
		m.closeObjs() // and what ApplyChange works from
	}
	// Only a clean teardown may let the next one return at once: after a
	// failed detach a program (with maps nobody updates any more) may still
	// be attached, and the next teardown must search again.
	m.scanned = err == nil
	return err
}

// setLiberal turns nf_conntrack_tcp_be_liberal on, first saving in config
// what it was unless it is on already. An operator who sets it back to 0
// while the fast path runs gets 1 again, and 0 back at teardown.
func setLiberal(config *ebpf.Map) error {
	cur, err := readSysctl(beLiberal)
	if err != nil {
		return err
	}
	if cur == 1 {
		return nil
	}
	if err := config.Put(configSavedLiberal, cur+1); err != nil {
		return fmt.Errorf("fp_config: %w", err)
	}
	if err := os.WriteFile(beLiberal, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set nf_conntrack_tcp_be_liberal: %w", err)
	}
	return nil
}

// restoreLiberal puts back the operator's nf_conntrack_tcp_be_liberal
// (saved: the value plus one; 0 means there is nothing of ours to undo),
// only while the sysctl still holds the 1 the fast path set.
func restoreLiberal(saved uint32) error {
	if saved == 0 {
		return nil
	}
	cur, err := readSysctl(beLiberal)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no conntrack here any more: nothing to restore
	}
	if err != nil || cur != 1 {
		return err
	}
	if err := os.WriteFile(beLiberal, []byte(strconv.FormatUint(uint64(saved-1), 10)), 0o644); err != nil {
		return fmt.Errorf("restore nf_conntrack_tcp_be_liberal to %d: %w", saved-1, err)
	}
	return nil
}

func savedLiberal(objs *fastpathObjects) uint32 {
	if objs == nil {
		return 0
	}
	return savedLiberalIn(objs.FpConfig)
}

func savedLiberalIn(config *ebpf.Map) uint32 {
	var v uint32
	if err := config.Lookup(configSavedLiberal, &v); err != nil {
		return 0
	}
	return v
}

// establishedTimeoutMS is the host's nf_conntrack_tcp_timeout_established
// in milliseconds, the unit bpf_ct_change_timeout takes (at most about 49
// days fit its 32 bits; a longer setting is cut to that).
func establishedTimeoutMS() (uint32, error) {
	s, err := readSysctl(ctEstablished)
	if err != nil {
		return 0, err
	}
	return uint32(min(uint64(s)*1000, math.MaxUint32)), nil
}

func readSysctl(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return uint32(v), nil
}

// ifindex is the index of interface name; false if there is none. A
// failed lookup counts as none: that interface's packets then take the
// normal path, which is always correct, until the next Apply.
func ifindex(ifs *netdev.IfLookup, name string) (int, bool) {
	idx, ok, err := ifs.Index(name)
	return idx, ok && err == nil
}

// nativeOf reinterprets 4 network-order bytes as the uint32 a little-endian
// program sees when it loads them.
func nativeOf(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// ErrUnavailable marks an Apply that failed because this kernel (or this
// process's limits) cannot load the programs at all: trying again on the
// next pass would fail the same way.
var ErrUnavailable = errors.New("the eBPF fast path cannot be loaded")

func load(reuse map[string]*ebpf.Map) (*fastpathObjects, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("%w: raise the locked-memory limit: %s", ErrUnavailable, tcx.OneLine(err))
	}
	spec, err := loadFastpath()
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, tcx.OneLine(err))
	}
	// A predecessor's maps are taken over only where they still fit this
	// build's: when one changed shape (fp_stats gains a counter slot), the
	// others, fp_config with the operator's saved be_liberal among them,
	// are still carried over instead of all being dropped together.
	fit := map[string]*ebpf.Map{}
	for name, mp := range reuse {
		if ms, ok := spec.Maps[name]; ok && ms.Compatible(mp) == nil {
			fit[name] = mp
		}
	}
	var objs fastpathObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: fit})
	if err != nil && len(fit) > 0 {
		err = spec.LoadAndAssign(&objs, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, tcx.OneLine(err))
	}
	return &objs, nil
}

// Stats sums the programs' counters over CPUs; nil when nothing is loaded.
func (m *Manager) Stats() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs == nil {
		return nil
	}
	return tcx.SumStats(m.objs.FpStats, statNames)
}

// Uninstall removes what the fast path leaves in this namespace without its
// agent (`calicoctl node stop --cleanup`): our programs on every interface
// (the agent that knew the uplink is gone, so all are searched), and the
// nf_conntrack_tcp_be_liberal=1 it set, put back to the operator's value
// saved beside the programs. Left behind, the programs kept short-cutting
// established flows past whatever firewall the host gets next, and the
// window check stayed off for good. It tells what it removed.
func Uninstall() (removed []string, err error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		idx := l.Attrs().Index
		up, _ := tcx.Attached(idx, ebpf.AttachTCXIngress, progUplink)
		wl, _ := tcx.Attached(idx, ebpf.AttachTCXIngress, progWL) // an earlier build's
		cls, _ := tcx.ClsAttached(idx, progWL)
		if len(up) > 0 {
			removed = append(removed, "eBPF program "+progUplink+" on "+l.Attrs().Name+" ingress")
		}
		if len(wl)+len(cls) > 0 {
			removed = append(removed, "eBPF program "+progWL+" on "+l.Attrs().Name+" ingress")
		}
	}
	m := New()
	defer m.Close()
	// Disabled: teardown, which detaches everywhere and restores the sysctl
	// from the predecessor's fp_config.
	if err := m.Apply(Desired{}); err != nil {
		return nil, err
	}
	return removed, nil
}
