package netdev

import (
	"fmt"
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
func WorkloadVeths(opts ...Option) ([]WorkloadVeth, error) {
	o := buildOptions(opts)
	h, err := openHandle(o.netns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := retryDump("links", h.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []WorkloadVeth
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && isDerivedName(a.Name) && a.HardwareAddr.String() == HostSideMAC {
			out = append(out, WorkloadVeth{Name: a.Name, Index: a.Index})
		}
	}
	return out, nil
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
