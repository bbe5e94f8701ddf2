package resource

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/selector"
)

// fieldError is a validation problem at a field path like
// spec.ingress[0].source.nets[1].
type fieldError struct {
	path string
	msg  string
}

// yamlPath is the path in the YAML library's syntax.
func (e fieldError) yamlPath() string { return "$." + e.path }

type errList []fieldError

func (l *errList) add(path, format string, args ...any) {
	*l = append(*l, fieldError{path, fmt.Sprintf(format, args...)})
}

// Names as Kubernetes resource names (DNS subdomain): lower-case
// alphanumerics, '-' and '.', starting and ending alphanumeric.
var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// Label keys: an optional DNS prefix and '/', then a name of up to 63
// characters; values up to 63 characters. As Kubernetes allows them.
var (
	labelNameRE  = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
)

// ValidateName checks a resource name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("required")
	case len(name) > 253:
		return fmt.Errorf("%q is longer than 253 characters", name)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%q: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", name)
	}
	return nil
}

// ValidateLabel checks one label.
func ValidateLabel(key, value string) error {
	name := key
	if prefix, rest, ok := strings.Cut(key, "/"); ok {
		if prefix == "" || len(prefix) > 253 || !nameRE.MatchString(prefix) {
			return fmt.Errorf("label key %q: the prefix before '/' must be a DNS name", key)
		}
		name = rest
	}
	if name == "" || len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Errorf("label key %q: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", key)
	}
	if len(value) > 63 || !labelValueRE.MatchString(value) {
		return fmt.Errorf("label %s value %q: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", key, value)
	}
	return nil
}

func validateMeta(m ObjectMeta, errs *errList) {
	if err := ValidateName(m.Name); err != nil {
		errs.add("metadata.name", "%v", err)
	}
	keys := make([]string, 0, len(m.Labels))
	for k := range m.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := ValidateLabel(k, m.Labels[k]); err != nil {
			errs.add("metadata.labels."+k, "%v", err)
		}
	}
}

func validatePolicy(p *GlobalNetworkPolicy) []fieldError {
	var errs errList
	validateMeta(p.Metadata, &errs)
	s := &p.Spec
	if s.Order != nil && (math.IsNaN(*s.Order) || math.IsInf(*s.Order, 0)) {
		errs.add("spec.order", "must be a finite number")
	}
	if s.Selector != "" {
		if _, err := selector.Parse(s.Selector); err != nil {
			errs.add("spec.selector", "%v", err)
		}
	}
	seen := map[string]bool{}
	for i, t := range s.Types {
		switch {
		case t != TypeIngress && t != TypeEgress:
			errs.add(fmt.Sprintf("spec.types[%d]", i), "%q: want %s or %s", t, TypeIngress, TypeEgress)
		case seen[t]:
			errs.add(fmt.Sprintf("spec.types[%d]", i), "%s is listed twice", t)
		}
		seen[t] = true
	}
	if len(s.Types) > 0 {
		if len(s.Ingress) > 0 && !seen[TypeIngress] {
			errs.add("spec.ingress", "ingress rules need %s in spec.types", TypeIngress)
		}
		if len(s.Egress) > 0 && !seen[TypeEgress] {
			errs.add("spec.egress", "egress rules need %s in spec.types", TypeEgress)
		}
	}
	for i, r := range s.Ingress {
		validateRule(fmt.Sprintf("spec.ingress[%d]", i), r, &errs)
	}
	for i, r := range s.Egress {
		validateRule(fmt.Sprintf("spec.egress[%d]", i), r, &errs)
	}
	return errs
}

// PolicyTypes is what a policy applies to: its types, or Calico's default
// (Ingress, plus Egress when it has egress rules).
func (s *GlobalNetworkPolicySpec) PolicyTypes() (ingress, egress bool) {
	if len(s.Types) == 0 {
		return true, len(s.Egress) > 0
	}
	return slices.Contains(s.Types, TypeIngress), slices.Contains(s.Types, TypeEgress)
}

func validateRule(path string, r Rule, errs *errList) {
	switch r.Action {
	case ActionAllow, ActionDeny, ActionLog, ActionPass:
	case "":
		errs.add(path+".action", "required: %s, %s, %s or %s", ActionAllow, ActionDeny, ActionLog, ActionPass)
	default:
		errs.add(path+".action", "%q: want %s, %s, %s or %s", r.Action, ActionAllow, ActionDeny, ActionLog, ActionPass)
	}
	family := 0
	if r.IPVersion != nil {
		if *r.IPVersion != 4 && *r.IPVersion != 6 {
			errs.add(path+".ipVersion", "%d: want 4 or 6", *r.IPVersion)
		} else {
			family = *r.IPVersion
		}
	}
	for _, x := range []struct {
		name  string
		proto *Protocol
	}{{"protocol", r.Protocol}, {"notProtocol", r.NotProtocol}} {
		if x.proto != nil && x.proto.bad != "" {
			errs.add(path+"."+x.name, "%s", x.proto.bad)
		}
	}
	for _, x := range []struct {
		name string
		icmp *ICMPFields
	}{{"icmp", r.ICMP}, {"notICMP", r.NotICMP}} {
		if x.icmp == nil {
			continue
		}
		if r.Protocol == nil || (r.Protocol.Number != 1 && r.Protocol.Number != 58) {
			errs.add(path+"."+x.name, "needs protocol ICMP or ICMPv6")
		} else if r.Protocol.Number == 1 && family == 6 || r.Protocol.Number == 58 && family == 4 {
			errs.add(path+".protocol", "%s does not match ipVersion %d", r.Protocol, family)
		}
		if x.icmp.Type != nil && (*x.icmp.Type < 0 || *x.icmp.Type > 254) {
			errs.add(path+"."+x.name+".type", "%d is outside 0-254", *x.icmp.Type)
		}
		if x.icmp.Code != nil {
			if x.icmp.Type == nil {
				errs.add(path+"."+x.name+".code", "needs a type")
			} else if *x.icmp.Code < 0 || *x.icmp.Code > 255 {
				errs.add(path+"."+x.name+".code", "%d is outside 0-255", *x.icmp.Code)
			}
		}
	}
	for _, e := range []struct {
		name string
		ent  EntityRule
	}{{"source", r.Source}, {"destination", r.Destination}} {
		ep := path + "." + e.name
		for _, f := range []struct {
			name string
			nets []string
		}{{"nets", e.ent.Nets}, {"notNets", e.ent.NotNets}} {
			for i, n := range f.nets {
				p, err := ParseNet(n)
				if err != nil {
					errs.add(fmt.Sprintf("%s.%s[%d]", ep, f.name, i), "%v", err)
					continue
				}
				if family == 4 && !p.Addr().Is4() || family == 6 && p.Addr().Is4() {
					errs.add(fmt.Sprintf("%s.%s[%d]", ep, f.name, i), "%s does not match ipVersion %d", n, family)
				}
			}
		}
		for _, f := range []struct{ name, sel string }{{"selector", e.ent.Selector}, {"notSelector", e.ent.NotSelector}} {
			if f.sel == "" {
				continue
			}
			if _, err := selector.Parse(f.sel); err != nil {
				errs.add(ep+"."+f.name, "%v", err)
			}
		}
		for _, f := range []struct {
			name  string
			ports []Port
		}{{"ports", e.ent.Ports}, {"notPorts", e.ent.NotPorts}} {
			for i, p := range f.ports {
				if p.bad != "" {
					errs.add(fmt.Sprintf("%s.%s[%d]", ep, f.name, i), "%s", p.bad)
				}
			}
		}
		if len(e.ent.Ports) > 0 || len(e.ent.NotPorts) > 0 {
			if r.Protocol == nil || !r.Protocol.HasPorts() {
				field := "ports"
				if len(e.ent.Ports) == 0 {
					field = "notPorts"
				}
				errs.add(ep+"."+field, "ports need protocol TCP, UDP, SCTP or UDPLite")
			}
		}
	}
}

// ParseNet reads a CIDR or a single address (as a /32 or /128), masked.
func ParseNet(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 networks in IPv4 form, without a zone", s)
		}
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" && !a.Is4In6() {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not a network: want a CIDR like 10.1.0.0/16 or an address", s)
}

func validateSet(s *GlobalNetworkSet) []fieldError {
	var errs errList
	validateMeta(s.Metadata, &errs)
	for i, n := range s.Spec.Nets {
		if _, err := ParseNet(n); err != nil {
			errs.add(fmt.Sprintf("spec.nets[%d]", i), "%v", err)
		}
	}
	return errs
}
