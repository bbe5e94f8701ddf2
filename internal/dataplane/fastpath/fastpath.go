// Package fastpath owns a host's eBPF fast path for flows that nftables has
// already accepted: two tc programs (fastpath.c) on the tcx ingress of every
// workload interface and of the uplink, which move packets of ESTABLISHED,
// policy-accepted, un-NATed IPv4 TCP flows straight to their next device
// (bpf_redirect_peer into a local workload's namespace, bpf_redirect out of
// the uplink), skipping the veth backlog, routing and netfilter. Every
// policy decision stays where it is made (nftables): a flow's first
// packets go the normal way, and only a confirmed, assured conntrack entry
// without NAT lets later packets take the short cut.
//
// Off by default (calico-node turns it on with CALICO_FASTPATH=on). The
// A/B measurement this package's TestMeasureCPUPerGB makes (real agents and
// ruleset, nat-outgoing pool, 1-stream iperf3, off and on alternated) found
// no gain of 5% or more in CPU seconds per GB on this kernel (2026-12-03,
// 48 paired rounds in four runs on a loaded machine): on/off ratio across
// hosts median 0.980, geometric mean 0.961 (95% interval 0.928-0.995); on
// one host 0.985 and 0.977 (0.940-1.014). The cause: the forwarding path
// works per GSO superpacket (about 56 KB each, 18k per GB across hosts),
// so what the fast path skips (netfilter, 7% of the flow's CPU samples; a
// second backlog) is small next to the copies between user and kernel
// (35-40%) and TCP, which host-to-host pays too; and its own conntrack and
// FIB lookups take back about 1.5%.
//
// Why it is shaped like this:
//
//   - The prerouting chain from-wl-src (anti-spoofing) runs after tc
//     ingress, so a redirected packet would skip it. The programs check
//     (ingress ifindex, source) against fp_wl_src, kept here from the same
//     desired state as the nftables set wl-src4; a mismatch goes the normal
//     way, where nftables drops it.
//   - Fast-pathed packets skip conntrack, so its TCP window bookkeeping goes
//     stale: the connection's FIN, which goes the normal way, would then be
//     out of window, "ct state invalid" and dropped. Apply therefore sets
//     net.netfilter.nf_conntrack_tcp_be_liberal=1 in the host's namespace
//     while the fast path is on (state tracking stays; only the window
//     check is skipped; teardown sets it back to 0).
//   - Programs are attached with tcx's program API (BPF_PROG_ATTACH), as
//     ipip's are: they stay when the agent exits and go with their
//     interfaces. A starting agent finds its predecessor's programs by name,
//     reuses their maps and replaces the programs in one step (attach
//     before detach: no packet passes between the two).
package fastpath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/dataplane/netdev"
)

// Program names as the kernel reports them (at most 15 characters).
const (
	progWL     = "fp_from_wl"
	progUplink = "fp_from_uplink"
)

// Values of fp_ifaces, as in fastpath.c.
const (
	ifaceWorkload uint32 = 1
	ifaceUplink   uint32 = 2
)

// Counter slots, as enum STAT_ in fastpath.c.
var statNames = []string{
	"fwd_workload", "fwd_uplink", "pass_not_tcp", "pass_spoof",
	"pass_no_ct", "pass_ct_state", "pass_fib", "pass_ttl",
}

const beLiberal = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"

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
			err = errors.Join(err, m.teardown())
		}
	} else {
		err = m.teardown()
	}
	return err
}

func (m *Manager) apply(d Desired) error {
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
		reuse := existingMaps(uplink.Attrs().Index)
		objs, err := load(reuse)
		for _, mp := range reuse {
			mp.Close()
		}
		if err != nil {
			return err
		}
		m.objs = objs
	}
	if err := os.WriteFile(beLiberal, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("set nf_conntrack_tcp_be_liberal: %w", err)
	}
	// Which interfaces exist now; a workload whose interface is not there
	// yet gets its programs on a later Apply.
	wantIfaces := map[uint32]uint32{uint32(uplink.Attrs().Index): ifaceUplink}
	wantSrc := map[fastpathWlSrcKey]uint32{}
	wlIndex := map[string]int{}
	for _, w := range d.Workloads {
		l, err := netlink.LinkByName(w.Iface)
		if err != nil {
			continue
		}
		idx := l.Attrs().Index
		wlIndex[w.Iface] = idx
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
	// Maps first: a program attached now must find its entries.
	if err := errors.Join(syncMap(m.objs.FpIfaces, wantIfaces), syncMap(m.objs.FpWlSrc, wantSrc)); err != nil {
		return err
	}
	if err := attach(uplink.Attrs().Index, progUplink, m.objs.FpFromUplink); err != nil {
		return fmt.Errorf("attach %s to %s ingress: %w", progUplink, upName, err)
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
		if err := attach(wlIndex[n], progWL, m.objs.FpFromWl); err != nil {
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
			if ids, _ := attachedByName(l.Attrs().Index, progWL); len(ids) > 0 {
				stale[l.Attrs().Name] = true
			}
		}
		m.scanned = true
	}
	for n := range stale {
		if _, ok := wlIndex[n]; ok {
			continue
		}
		if l, err := netlink.LinkByName(n); err == nil {
			if err := detach(l.Attrs().Index, progWL); err != nil {
				return err
			}
		}
		delete(m.attached, n)
	}
	m.status = fmt.Sprintf("on (tcx ingress: %s on %s, %s on %d workload interfaces)", progUplink, upName, progWL, len(wlIndex))
	return nil
}

// teardown detaches our programs from every interface (the uplink may have
// changed since they were attached, so all are searched) and sets the
// conntrack window check back.
func (m *Manager) teardown() error {
	if m.status == "" && m.scanned && m.objs == nil {
		return nil // nothing of ours was left the last time we looked
	}
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		for _, name := range []string{progWL, progUplink} {
			errs = append(errs, detach(l.Attrs().Index, name))
		}
	}
	if m.status != "" || m.objs != nil {
		if err := os.WriteFile(beLiberal, []byte("0"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("reset nf_conntrack_tcp_be_liberal: %w", err))
		}
	}
	m.closeObjs()
	clear(m.attached)
	m.status = ""
	m.scanned = true
	return errors.Join(errs...)
}

// nativeOf reinterprets 4 network-order bytes as the uint32 a little-endian
// program sees when it loads them.
func nativeOf(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func load(reuse map[string]*ebpf.Map) (*fastpathObjects, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise the locked-memory limit: %w", err)
	}
	spec, err := loadFastpath()
	if err != nil {
		return nil, err
	}
	var objs fastpathObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: reuse})
	if err != nil && len(reuse) > 0 {
		err = spec.LoadAndAssign(&objs, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("load the eBPF fast path: %s", oneLine(err))
	}
	return &objs, nil
}

// existingMaps returns the maps of a predecessor's uplink program, by name.
func existingMaps(ifindex int) map[string]*ebpf.Map {
	ids, err := attachedByName(ifindex, progUplink)
	if err != nil || len(ids) == 0 {
		return nil
	}
	prog, err := ebpf.NewProgramFromID(ids[0])
	if err != nil {
		return nil
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return nil
	}
	mapIDs, _ := info.MapIDs()
	out := map[string]*ebpf.Map{}
	for _, id := range mapIDs {
		mp, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := mp.Info()
		if err != nil || !slices.Contains([]string{"fp_wl_src", "fp_ifaces", "fp_stats"}, mi.Name) {
			mp.Close()
			continue
		}
		out[mi.Name] = mp
	}
	return out
}

func attachedByName(ifindex int, name string) ([]ebpf.ProgramID, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, err
	}
	var out []ebpf.ProgramID
	for _, ap := range res.Programs {
		p, err := ebpf.NewProgramFromID(ap.ID)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && info.Name == name {
			out = append(out, ap.ID)
		}
	}
	return out, nil
}

// attach makes prog the one program called name at ifindex's tcx ingress,
// replacing a predecessor in one step. New programs go last, after other
// programs (ipip_decap must see the uplink's packets first).
func attach(ifindex int, name string, prog *ebpf.Program) error {
	info, err := prog.Info()
	if err != nil {
		return err
	}
	mine, _ := info.ID()
	ids, err := attachedByName(ifindex, name)
	if err != nil {
		return err
	}
	placed := false
	for _, id := range ids {
		if id == mine && !placed {
			placed = true
			continue
		}
		old, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if !placed {
			err = link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.ReplaceProgram(old)})
			placed = err == nil
		} else {
			err = link.RawDetachProgram(link.RawDetachProgramOptions{Target: ifindex, Program: old, Attach: ebpf.AttachTCXIngress})
		}
		old.Close()
		if err != nil {
			return err
		}
	}
	if !placed {
		return link.RawAttachProgram(link.RawAttachProgramOptions{Target: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress, Anchor: link.Tail()})
	}
	return nil
}

func detach(ifindex int, name string) error {
	ids, err := attachedByName(ifindex, name)
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: ifindex, Program: p, Attach: ebpf.AttachTCXIngress}); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("detach %s: %w", name, err))
		}
		p.Close()
	}
	return errors.Join(errs...)
}

func syncMap[K comparable, V comparable](mp *ebpf.Map, want map[K]V) error {
	var errs []error
	var k K
	var v V
	have := map[K]V{}
	it := mp.Iterate()
	for it.Next(&k, &v) {
		have[k] = v
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read map: %w", err)
	}
	for k, v := range want {
		if hv, ok := have[k]; ok && hv == v {
			continue
		}
		if err := mp.Put(k, v); err != nil {
			errs = append(errs, fmt.Errorf("update map: %w", err))
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			if err := mp.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete from map: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Stats sums the programs' counters over CPUs; nil when nothing is loaded.
func (m *Manager) Stats() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs == nil {
		return nil
	}
	out := map[string]uint64{}
	for i, name := range statNames {
		var per []uint64
		if err := m.objs.FpStats.Lookup(uint32(i), &per); err != nil {
			continue
		}
		for _, v := range per {
			out[name] += v
		}
	}
	return out
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " (more in the agent's log)"
	}
	return s
}
