package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/calico-go/calico/internal/dataplane/fastpath"
	"github.com/calico-go/calico/internal/lab"
)

// benchFastPath attaches internal/dataplane/fastpath's programs to the
// hosts of the policy-cost ablation for the runs of one state, the way
// calico-node does by default, while the agents are stopped.
// It owns the programs it attaches (one fastpath.Manager per host) and
// takes them down after every run and at close, which also puts
// nf_conntrack_tcp_be_liberal back.
type benchFastPath struct {
	hosts []*lab.Host
	mgrs  map[*lab.Host]*fastpath.Manager
	want  map[*lab.Host]fastpath.Desired
	// stats sums the programs' counters over every run that had them on:
	// a ratio for this state means nothing unless fwd_* moved.
	stats map[string]uint64
}

// newBenchFastPath prepares (without attaching) the fast path of every
// host from its saved table: the programs' workload list is the table's
// wl-src4 set, (interface, IPv4 source) of each local endpoint, which is
// what the agent derives both from (fastpathDesired in internal/agent).
func newBenchFastPath(hosts []*lab.Host, saved map[*lab.Host]string) (*benchFastPath, error) {
	f := &benchFastPath{hosts: hosts, mgrs: map[*lab.Host]*fastpath.Manager{}, want: map[*lab.Host]fastpath.Desired{}, stats: map[string]uint64{}}
	for _, h := range hosts {
		wls, err := wlSrc4(saved[h])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", h.Label, err)
		}
		f.want[h] = fastpath.Desired{Enabled: len(wls) > 0, LocalIP: h.Addr(), Workloads: wls}
		f.mgrs[h] = fastpath.New()
	}
	return f, nil
}

// on attaches the programs on every host.
func (f *benchFastPath) on() error {
	for _, h := range f.hosts {
		m, d := f.mgrs[h], f.want[h]
		if err := h.Do(func() error { return m.Apply(d) }); err != nil {
			return fmt.Errorf("fast path on %s: %w", h.Label, err)
		}
	}
	return nil
}

// off adds the programs' counters to stats and detaches them everywhere.
func (f *benchFastPath) off() error {
	var errs []error
	for _, h := range f.hosts {
		m := f.mgrs[h]
		for k, v := range m.Stats() {
			f.stats[k] += v
		}
		if err := h.Do(func() error { return m.Apply(fastpath.Desired{}) }); err != nil {
			errs = append(errs, fmt.Errorf("fast path off on %s: %w", h.Label, err))
		}
	}
	return errors.Join(errs...)
}

// close takes the programs down and releases the managers.
func (f *benchFastPath) close() error {
	err := f.off()
	for _, m := range f.mgrs {
		m.Close()
	}
	return err
}

// wlSrc4 reads the elements of set wl-src4 from `nft list table` output:
// `"caliX" . 192.168.100.1, ...`, grouped by interface in order of first
// appearance.
func wlSrc4(table string) ([]fastpath.Workload, error) {
	i := strings.Index(table, "set wl-src4 {")
	if i < 0 {
		return nil, errors.New("the saved table has no set wl-src4")
	}
	body := table[i:]
	if end := strings.Index(body, "\n\t}"); end >= 0 {
		body = body[:end]
	}
	var wls []fastpath.Workload
	at := map[string]int{}
	for _, m := range regexp.MustCompile(`"([^"]+)" \. ([0-9.]+)`).FindAllStringSubmatch(body, -1) {
		a, err := netip.ParseAddr(m[2])
		if err != nil {
			return nil, fmt.Errorf("wl-src4 element %q: %w", m[0], err)
		}
		k, ok := at[m[1]]
		if !ok {
			k = len(wls)
			at[m[1]] = k
			wls = append(wls, fastpath.Workload{Iface: m[1]})
		}
		wls[k].Addrs = append(wls[k].Addrs, a)
	}
	return wls, nil
}

// agentsWithoutFastPath makes the calico-node agents of worlds built until
// the returned function is called run with CALICO_FASTPATH=off (calicoctl
// passes its environment on to the node it starts), whatever the default:
// the bench then attaches the fast path itself for the runs of the paths
// that name it, and every other path is measured without it, in the same
// rounds. The returned function puts the variable back.
func agentsWithoutFastPath() func() {
	old, had := os.LookupEnv("CALICO_FASTPATH")
	os.Setenv("CALICO_FASTPATH", "off")
	return func() {
		if had {
			os.Setenv("CALICO_FASTPATH", old)
		} else {
			os.Unsetenv("CALICO_FASTPATH")
		}
	}
}

// liveFastPath prepares the fast path of a world whose agents are running
// (with theirs off): the workload list is each host's live table's wl-src4,
// read now, after the world's last workload was added.
func (w *world) liveFastPath(ctx context.Context) (*benchFastPath, error) {
	tables := map[*lab.Host]string{}
	for _, h := range w.Hosts {
		out, err := h.Run(ctx, "nft", "list", "table", "inet", "calico")
		if err != nil {
			return nil, fmt.Errorf("%s: nft list table: %w", h.Label, err)
		}
		tables[h] = out
	}
	return newBenchFastPath(w.Hosts, tables)
}

// path is p with the fast path attached on every host for each of its runs
// and taken down after it.
func (f *benchFastPath) path(p tpath) tpath {
	p.before, p.after = f.on, f.off
	return p
}

// closeInto takes the fast path down and reports its counters over the
// runs that had it on: a ratio means nothing unless fwd_* moved.
func (f *benchFastPath) closeInto(r *runner, world string) {
	if err := f.close(); err != nil {
		r.res.finding("%s: taking the eBPF fast path down failed: %v", world, err)
	}
	if len(f.stats) > 0 {
		r.res.finding("%s: the eBPF fast path's counters over its runs, both hosts: %s.", world, statsNote(f.stats))
	}
}
