// Package ipip owns a host's IPIP dataplane: on kernels with the ipip
// module the kernel's tunl0, and on kernels without it (this project's
// machines) two tc programs written in ipip.c. Both put plain IPIP on the
// wire, so the two kinds of host talk to each other.
//
// The eBPF path, and why it is shaped like this:
//
//   - Remote IPIP blocks are routed "BLOCK via NODE dev ipip.calico onlink",
//     like tunl0's routes. ipip.calico is a TUN device nobody reads: it has
//     no link layer, so the kernel resolves no neighbour before its tc
//     egress runs (a route out of the uplink would first need an ARP answer
//     for NODE, which a node on another subnet never gives), and its MTU of
//     1480 gives senders and forwarding the right path MTU. Its egress
//     program (ipip_encap) adds the outer header, looks up the underlay next
//     hop with bpf_fib_lookup per packet (so underlay route changes need
//     nothing from us) and leaves through bpf_redirect_neigh. Were the
//     program missing, packets would die in the reader-less device: nothing
//     ever leaves unencapsulated.
//   - ipip_decap on the uplink's tc ingress decapsulates protocol-4 packets
//     to this host only from node addresses, with inner sources in a block of
//     that node, and drops every other protocol-4 packet to this host. It
//     also drops plain (not IPIP) packets whose source is in a block routed
//     through the tunnel: that block's node sends only encapsulated, and
//     the uplink's rp_filter, loosened for the decapsulated packets, would
//     let a forged remote workload's source in.
//   - The programs are attached with tcx's program API (BPF_PROG_ATTACH),
//     not bpf_links: they stay attached when the agent exits, so a restart
//     does not stop traffic, and they go with the interfaces (a deleted
//     namespace leaves nothing pinned behind). A starting agent finds its
//     predecessor's programs by name, reuses their maps (so routes it has not
//     re-learned yet keep working) and replaces the programs atomically
//     (BPF_F_REPLACE).
package ipip

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/dataplane/tcx"
)

// Program names as the kernel reports them (at most 15 characters).
const (
	progDecap = "ipip_decap"
	progEncap = "ipip_encap"
)

// Counter slots, as enum STAT_ in ipip.c.
var statNames = []string{
	"encap_ok", "encap_no_route", "encap_no_underlay", "encap_error",
	"decap_ok", "drop_unknown_node", "drop_inner_source", "drop_malformed",
	"drop_plain_source",
}

// failBackoff is how long a failed load or attach keeps IPIP pools
// unreachable before the next attempt.
const failBackoff = 30 * time.Second

// Manager converges one host's IPIP dataplane to a calc.IPIP. It works in
// the network namespace of the thread that calls it (the agent's whole
// process lives in its host's namespace). Safe for concurrent use.
type Manager struct {
	mu        sync.Mutex
	objs      *ipipObjects // programs and maps loaded by this process
	objsIP    netip.Addr   // local_ip they were loaded with
	objsDecap bool
	keepStale bool
	loads     bool // the programs passed the verifier here once
	clean     bool // disabled, and nothing of ours was left the last time we looked
	failedAt  time.Time
	failure   string
	status    string
}

// New returns a manager; it touches nothing until Apply.
func New() *Manager { return &Manager{} }

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

// KeepStale, while on, makes Apply add map entries but delete none, as
// the route syncer does while a restarted agent re-learns its routes.
func (m *Manager) KeepStale(on bool) {
	m.mu.Lock()
	m.keepStale = on
	m.mu.Unlock()
}

// Support says whether the eBPF path can be used here: the programs load
// (checked once, then after every failure's back-off) and nothing failed
// recently. The answer goes into calc.Input, which keeps IPIP blocks
// unreachable and reports the problem while it is false.
func (m *Manager) Support() calc.IPIPSupport {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.failedAt.IsZero() && time.Since(m.failedAt) < failBackoff {
		return calc.IPIPSupport{Problem: m.failure}
	}
	if m.objs != nil || m.loads {
		return calc.IPIPSupport{BPF: true}
	}
	// Load once with a placeholder address to ask the verifier; Apply
	// loads the real thing.
	objs, err := load(netip.IPv4Unspecified(), true, nil)
	if err != nil {
		m.fail(err)
		return calc.IPIPSupport{Problem: m.failure}
	}
	objs.Close()
	m.loads = true
	return calc.IPIPSupport{BPF: true}
}

func (m *Manager) fail(err error) {
	m.failedAt, m.failure = time.Now(), "the eBPF IPIP programs cannot be used: "+tcx.OneLine(err)
}

// Status is one line for `calicoctl status`: which IPIP path this host uses.
func (m *Manager) Status() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Apply makes the kernel match d. Enabled in eBPF mode: ipip.calico is up
// with MTU 1480, the maps hold d's routes and nodes, and both programs are
// attached (replacing a predecessor's). Enabled in kernel mode: tunl0 is up
// with MTU 1480, and ipip_decap filters (without decapsulating) on the
// uplink. Disabled: our programs are detached and ipip.calico deleted.
//
// An error means IPIP cannot be trusted to work: Support reports it, so
// the next calculation makes IPIP blocks unreachable.
func (m *Manager) Apply(d calc.IPIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.apply(d)
	if err != nil && d.Enabled {
		m.fail(err)
		m.status = ""
		// Whatever half-works must not carry traffic: take it down.
		_ = m.teardown(d.LocalIP)
	}
	return err
}

func (m *Manager) apply(d calc.IPIP) error {
	if !d.Enabled {
		m.status = ""
		if m.clean {
			return nil
		}
		err := m.teardown(d.LocalIP)
		m.clean = err == nil
		return err
	}
	m.clean = false
	if !d.LocalIP.Is4() {
		return errors.New("IPIP needs this host's IPv4 address")
	}
	uplink, err := uplinkOf(d.LocalIP)
	if err != nil {
		return err
	}
	decap := d.Mode == calc.IPIPBPF
	var dev netlink.Link
	if decap {
		if dev, err = ensureTun(d.Device, d.MTU); err != nil {
			return err
		}
	} else {
		if err := ensureKernelTunnel(d.Device, d.MTU); err != nil {
			return err
		}
		if err := deleteTun(calc.IPIPBPFDevice); err != nil {
			return err
		}
	}
	if err := loosenRPFilter(uplink.Attrs().Name); err != nil {
		return err
	}
	if m.objs == nil || m.objsIP != d.LocalIP || m.objsDecap != decap {
		m.closeObjs()
		reuse := tcx.ExistingMaps(uplink.Attrs().Index, ebpf.AttachTCXIngress, progDecap, "ipip_routes", "ipip_nodes", "ipip_stats")
		objs, err := load(d.LocalIP, decap, reuse)
		for _, mp := range reuse {
			mp.Close()
		}
		if err != nil {
			return err
		}
		m.objs, m.objsIP, m.objsDecap = objs, d.LocalIP, decap
	}
	// Maps first: a program replaced now must find its routes.
	if err := m.syncMaps(d); err != nil {
		return err
	}
	if err := tcx.Attach(uplink.Attrs().Index, ebpf.AttachTCXIngress, progDecap, m.objs.IpipDecap, link.Head()); err != nil {
		return fmt.Errorf("attach %s to %s ingress: %w", progDecap, uplink.Attrs().Name, err)
	}
	if decap {
		if err := tcx.Attach(dev.Attrs().Index, ebpf.AttachTCXEgress, progEncap, m.objs.IpipEncap, link.Head()); err != nil {
			return fmt.Errorf("attach %s to %s egress: %w", progEncap, d.Device, err)
		}
		m.status = fmt.Sprintf("eBPF (tcx: %s on %s ingress, %s on %s egress), MTU %d", progDecap, uplink.Attrs().Name, progEncap, d.Device, d.MTU)
	} else {
		m.status = fmt.Sprintf("kernel (%s), MTU %d; %s filters senders on %s ingress", d.Device, d.MTU, progDecap, uplink.Attrs().Name)
	}
	return nil
}

// teardown detaches our programs from the uplink and deletes ipip.calico
// (its egress program goes with it). The kernel's tunl0 is left alone: it
// exists whenever the ipip module does, and routes through it are gone.
func (m *Manager) teardown(local netip.Addr) error {
	var errs []error
	if local.Is4() {
		if uplink, err := uplinkOf(local); err == nil {
			errs = append(errs, tcx.Detach(uplink.Attrs().Index, ebpf.AttachTCXIngress, progDecap))
		}
	}
	errs = append(errs, deleteTun(calc.IPIPBPFDevice))
	m.closeObjs()
	return errors.Join(errs...)
}

// load loads the programs with their constants, reusing the given maps.
func load(local netip.Addr, decap bool, reuse map[string]*ebpf.Map) (*ipipObjects, error) {
	// Needed only on kernels before 5.11, which charge BPF memory to
	// RLIMIT_MEMLOCK; a no-op elsewhere.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise the locked-memory limit: %w", err)
	}
	spec, err := loadIpip()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["local_ip"].Set(local.As4()); err != nil {
		return nil, err
	}
	d := uint32(0)
	if decap {
		d = 1
	}
	if err := spec.Variables["decap"].Set(d); err != nil {
		return nil, err
	}
	var objs ipipObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: reuse})
	if err != nil && len(reuse) > 0 {
		// The predecessor's maps do not fit (a changed layout): start
		// with fresh ones, which Apply fills before attaching.
		err = spec.LoadAndAssign(&objs, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	return &objs, nil
}

type routeKey struct {
	Prefixlen uint32
	Addr      [4]byte
}

type routeVal struct {
	Node  [4]byte
	Flags uint32
}

// syncMaps makes the maps hold exactly d's routes and nodes (deleting
// nothing while keepStale is on).
func (m *Manager) syncMaps(d calc.IPIP) error {
	wantRoutes := map[routeKey]routeVal{}
	for _, r := range d.Routes {
		if !r.Dst.Addr().Is4() || !r.Node.Is4() {
			continue
		}
		wantRoutes[routeKey{uint32(r.Dst.Bits()), r.Dst.Masked().Addr().As4()}] = routeVal{Node: r.Node.As4()}
	}
	wantNodes := map[[4]byte]uint32{}
	for _, n := range d.Nodes {
		if n.Is4() {
			wantNodes[n.As4()] = 1
		}
	}
	return errors.Join(tcx.SyncMap(m.objs.IpipRoutes, wantRoutes, m.keepStale), tcx.SyncMap(m.objs.IpipNodes, wantNodes, m.keepStale))
}

// Stats sums the programs' counters over CPUs (see statNames), for tests
// and troubleshooting; nil when nothing is loaded.
func (m *Manager) Stats() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objs == nil {
		return nil
	}
	return tcx.SumStats(m.objs.IpipStats, statNames)
}

// Attached lists the IPIP programs attached to dev in the calling thread's
// namespace, as "name/ingress" or "name/egress": for tests and troubleshooting.
func Attached(dev string) ([]string, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, at := range []struct {
		typ  ebpf.AttachType
		name string
	}{{ebpf.AttachTCXIngress, "ingress"}, {ebpf.AttachTCXEgress, "egress"}} {
		for _, prog := range []string{progDecap, progEncap} {
			ids, err := tcx.Attached(l.Attrs().Index, at.typ, prog)
			if err != nil {
				return nil, err
			}
			for range ids {
				out = append(out, prog+"/"+at.name)
			}
		}
	}
	return out, nil
}

// Uninstall removes what the eBPF path leaves in this namespace without
// its agent: the decap program on whichever interface was the uplink (the
// agent that knew it is gone, so every interface is searched) and
// ipip.calico. It tells what it removed.
func Uninstall() (removed []string, err error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		ids, qerr := tcx.Attached(l.Attrs().Index, ebpf.AttachTCXIngress, progDecap)
		if qerr != nil || len(ids) == 0 {
			continue // no tcx, or nothing of ours
		}
		if derr := tcx.Detach(l.Attrs().Index, ebpf.AttachTCXIngress, progDecap); derr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Attrs().Name, derr))
			continue
		}
		removed = append(removed, "eBPF program "+progDecap+" on "+l.Attrs().Name+" ingress")
	}
	if _, lerr := netlink.LinkByName(calc.IPIPBPFDevice); lerr == nil {
		if derr := deleteTun(calc.IPIPBPFDevice); derr != nil {
			errs = append(errs, derr)
		} else {
			removed = append(removed, "device "+calc.IPIPBPFDevice)
		}
	}
	return removed, errors.Join(errs...)
}
