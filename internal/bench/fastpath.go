package bench

import (
	"errors"
	"fmt"
	"net/netip"
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
