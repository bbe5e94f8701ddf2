package netdev

import (
	"fmt"
	"os"
	"strings"
)

// WorkloadVeth is a host-side workload veth found in a namespace. Index
// tells a veth from a later one of the same name.
type WorkloadVeth struct {
	Name  string
	Index int
}

// WorkloadVeths lists the veths that are ours by their make: named like
// api.WorkloadIfaceName ("cali" and 11 lowercase hex characters) and with
// HostSideMAC, the MAC every host side gets. Anything else named cali* is
// somebody else's and never listed.
//
// The names come from /proc/net/dev and each candidate is looked up by
// ioctl (IfLookup), not from a link dump: the dump describes every veth
// with its peer's namespace id, found by walking all namespace ids of the
// host, so at 1000 workloads it cost this sweep (every 15 s) about 26 ms.
func WorkloadVeths(opts ...Option) ([]WorkloadVeth, error) {
	return WorkloadVethsExcept(nil, opts...)
}

// WorkloadVethsExcept is WorkloadVeths leaving out the names in skip
// without looking them up: the sweeper passes the interfaces of the
// endpoints it knows, which it would ignore anyway, and at 1000 endpoints
// the five ioctls of each of them were most of every sweep's CPU (about
// 6 of 9 ms every 15 s, perf on an idle agent). Only the names not in skip
// (the leftovers the sweep looks for) are still checked for type and MAC.
func WorkloadVethsExcept(skip map[string]bool, opts ...Option) ([]WorkloadVeth, error) {
	o := buildOptions(opts)
	var names []string
	if err := runInNetns(o.netns, func() (err error) { names, err = devNames(); return err }); err != nil {
		return nil, err
	}
	links, err := NewIfLookup(o.netns)
	if err != nil {
		return nil, err
	}
	defer links.Close()
	var out []WorkloadVeth
	for _, n := range names {
		if !isDerivedName(n) || skip[n] {
			continue
		}
		l, err := links.find(n)
		if err != nil {
			return nil, err
		}
		if l == nil {
			continue // gone since the list was read
		}
		if a := l.Attrs(); l.Type() == "veth" && a.HardwareAddr.String() == HostSideMAC {
			out = append(out, WorkloadVeth{Name: a.Name, Index: a.Index})
		}
	}
	return out, nil
}

// devNames lists the interfaces of the calling thread's namespace, as
// /proc/thread-self/net/dev shows them (the thread's, where
// /proc/self/net would show the main thread's).
func devNames() ([]string, error) {
	b, err := os.ReadFile("/proc/thread-self/net/dev")
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var names []string
	for i, line := range strings.Split(string(b), "\n") {
		if i < 2 {
			continue // two lines of headings
		}
		// "  name: counters": a name holds no colon nor blank.
		if name, _, ok := strings.Cut(line, ":"); ok {
			names = append(names, strings.TrimSpace(name))
		}
	}
	return names, nil
}

func isDerivedName(name string) bool {
	rest, ok := strings.CutPrefix(name, "cali")
	if !ok || len(rest) != 11 {
		return false
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// DeleteWorkloadVeth deletes v if it is still there as listed: a veth made
// again under the same name since (a rerun of container add) has another
// index and is left alone. A veth already gone is not an error.
func DeleteWorkloadVeth(v WorkloadVeth, opts ...Option) error {
	o := buildOptions(opts)
	h, err := openHandle(o.netns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByIndex(v.Index)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", v.Name, err)
	}
	if l.Attrs().Name != v.Name || l.Type() != "veth" {
		return nil
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", v.Name, err)
	}
	return nil
}
