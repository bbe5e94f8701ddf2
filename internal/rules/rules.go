// Package rules reads and prints profile rules in the seed-era calicoctl
// grammar:
//
//	(inbound|outbound) [--at=N] (allow|deny)
//	    [(tcp|udp) | icmp [type N [code M]] | icmpv6 [type N [code M]]]
//	    [from [ports P] [tag T] [cidr C]] [to [ports P] [tag T] [cidr C]]
//
// It is pure, and every rule it returns passes api.ValidateRule.
package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/api"
)

// Rule directions, as the first word of `profile P rule add|remove`.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// ErrNoRule is wrapped by the error for input that stops before the action.
// `rule remove inbound --at=2` is legitimately such input, so callers that
// remove by position check errors.Is(err, ErrNoRule) && at > 0.
var ErrNoRule = errors.New("missing action")

// ParseCommand reads the words after `rule add|remove`. at is the 1-based
// position from --at=N or --at N, or 0 when absent (append). When err wraps
// ErrNoRule, dir and at are still set.
func ParseCommand(args []string) (dir string, at int, r api.Rule, err error) {
	p := &parser{args: args}
	if dir, err = p.direction(); err != nil {
		return "", 0, api.Rule{}, err
	}
	if at, err = p.position(); err != nil {
		return "", 0, api.Rule{}, err
	}
	if r, err = p.parseRule(); err != nil {
		if errors.Is(err, ErrNoRule) {
			return dir, at, api.Rule{}, err
		}
		return "", 0, api.Rule{}, err
	}
	return dir, at, r, nil
}

// Parse reads a rule from the action onward, e.g. allow tcp to ports 80.
func Parse(args []string) (api.Rule, error) {
	p := &parser{args: args}
	return p.parseRule()
}

// Validate checks a rule that did not come through Parse (rule update JSON).
func Validate(r api.Rule) error {
	return api.ValidateRule(r)
}

// Format prints r so that Parse reads it back to an equal rule.
func Format(r api.Rule) string {
	var w []string
	if r.Action != "" {
		w = append(w, r.Action)
	}
	if r.Protocol != "" {
		w = append(w, r.Protocol)
	}
	if r.ICMPType != nil {
		w = append(w, "type", strconv.Itoa(*r.ICMPType))
	}
	if r.ICMPCode != nil {
		w = append(w, "code", strconv.Itoa(*r.ICMPCode))
	}
	w = appendEntity(w, "from", r.Src)
	w = appendEntity(w, "to", r.Dst)
	return strings.Join(w, " ")
}

func appendEntity(w []string, side string, e api.EntityMatch) []string {
	if len(e.Ports) == 0 && e.Tag == "" && e.CIDR == "" {
		return w
	}
	w = append(w, side)
	if len(e.Ports) > 0 {
		w = append(w, "ports", FormatPorts(e.Ports))
	}
	if e.Tag != "" {
		w = append(w, "tag", e.Tag)
	}
	if e.CIDR != "" {
		w = append(w, "cidr", canonicalCIDR(e.CIDR))
	}
	return w
}

// canonicalCIDR prints the form Parse stores, so JSON rules written with
// e.g. upper-case IPv6 still round-trip.
func canonicalCIDR(s string) string {
	if p, err := api.ParseCIDR(s); err == nil {
		return p.String()
	}
	return s
}

// ParsePorts reads a comma-separated list of ports and ranges:
// 80,443,1000:2000 (1000-2000 is accepted too).
func ParsePorts(s string) ([]api.PortRange, error) {
	if s == "" {
		return nil, errors.New(`bad ports "": want a list such as 80,443,1000:2000`)
	}
	var out []api.PortRange
	for _, item := range strings.Split(s, ",") {
		pr, err := parsePortRange(item)
		if err != nil {
			return nil, fmt.Errorf("bad ports %s: %w", quote(s), err)
		}
		out = append(out, pr)
	}
	return out, nil
}

func parsePortRange(item string) (api.PortRange, error) {
	if item == "" {
		return api.PortRange{}, errors.New("empty entry")
	}
	lo, hi, isRange := strings.Cut(item, ":")
	if !isRange {
		lo, hi, isRange = strings.Cut(item, "-")
	}
	if !isRange {
		hi = lo
	}
	first, err := parsePort(lo)
	if err != nil {
		return api.PortRange{}, err
	}
	last, err := parsePort(hi)
	if err != nil {
		return api.PortRange{}, err
	}
	if first > last {
		return api.PortRange{}, fmt.Errorf("range start %d is greater than end %d", first, last)
	}
	return api.PortRange{Min: first, Max: last}, nil
}

func parsePort(s string) (uint16, error) {
	n, err := parseNumber(s, 65535)
	if err != nil {
		return 0, fmt.Errorf("%s is not a port number 0-65535", quote(s))
	}
	return uint16(n), nil
}

// FormatPorts prints ports the way ParsePorts reads them.
func FormatPorts(ports []api.PortRange) string {
	parts := make([]string, len(ports))
	for i, pr := range ports {
		parts[i] = pr.String()
	}
	return strings.Join(parts, ",")
}

// parseNumber accepts plain decimal only: no sign, space or underscore.
func parseNumber(s string, limit int) (int, error) {
	if s == "" || len(s) > 10 {
		return 0, errors.New("not a number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a number")
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > limit {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// quote cuts very long values so an error stays one readable line.
func quote(s string) string {
	const maxLen = 64
	if len(s) <= maxLen {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxLen]) + "..."
}
