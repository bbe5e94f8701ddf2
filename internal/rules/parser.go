package rules

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/calico-go/calico/internal/api"
)

// parser walks the words of one command. Errors quote the offending word
// and the one before it, because users fix the command line by eye.
type parser struct {
	args []string
	pos  int
	rule api.Rule
	// used holds the top-level keywords already consumed, so a repeat is
	// reported as such rather than as a puzzling "unexpected".
	used map[string]bool
}

func (p *parser) peek() (string, bool) {
	if p.pos >= len(p.args) {
		return "", false
	}
	return p.args[p.pos], true
}

func (p *parser) use(word string) {
	if p.used == nil {
		p.used = make(map[string]bool)
	}
	p.used[word] = true
	p.pos++
}

// unexpected reports the word at p.pos.
func (p *parser) unexpected(expected []string) error {
	w := p.args[p.pos]
	if p.used[w] {
		return fmt.Errorf("rule: %s given twice", quote(w))
	}
	if isProtocol(w) && p.rule.Action != "" && p.rule.Protocol == "" {
		return fmt.Errorf("rule: protocol %s must come right after %s", quote(w), p.rule.Action)
	}
	if p.pos == 0 {
		return fmt.Errorf("rule: unexpected %s; expected %s", quote(w), orList(expected))
	}
	return fmt.Errorf("rule: unexpected %s after %s; expected %s", quote(w), quote(p.args[p.pos-1]), orList(expected))
}

func isProtocol(w string) bool {
	switch w {
	case api.ProtocolTCP, api.ProtocolUDP, api.ProtocolICMP, api.ProtocolICMPv6:
		return true
	}
	return false
}

// missing reports running out of words where one was needed.
func (p *parser) missing(what, expected string) error {
	msg := "rule: missing " + what
	if p.pos > 0 {
		msg += " after " + quote(p.args[p.pos-1])
	}
	if expected != "" {
		msg += "; expected " + expected
	}
	return errors.New(msg)
}

func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func (p *parser) direction() (string, error) {
	w, ok := p.peek()
	if !ok {
		return "", p.missing("direction", "inbound or outbound")
	}
	if w != Inbound && w != Outbound {
		return "", p.unexpected([]string{Inbound, Outbound})
	}
	p.use(w)
	return w, nil
}

// position reads an optional --at=N or --at N.
func (p *parser) position() (int, error) {
	w, _ := p.peek()
	var val string
	switch {
	case w == "--at":
		p.use("--at")
		v, ok := p.peek()
		if !ok {
			return 0, p.missing("position", "a number from 1")
		}
		val = v
		p.pos++
	case strings.HasPrefix(w, "--at="):
		val = strings.TrimPrefix(w, "--at=")
		p.use("--at")
	default:
		return 0, nil
	}
	n, err := parseNumber(val, math.MaxInt32)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("rule: bad position %s in --at: want a number from 1", quote(val))
	}
	return n, nil
}

func (p *parser) parseRule() (api.Rule, error) {
	if err := p.action(); err != nil {
		return api.Rule{}, err
	}
	if err := p.protocol(); err != nil {
		return api.Rule{}, err
	}
	if err := p.clauses(); err != nil {
		return api.Rule{}, err
	}
	// The grammar cannot rule out everything (ports with icmp, an IPv6
	// cidr with icmp), and JSON rules must be held to the same standard.
	if err := api.ValidateRule(p.rule); err != nil {
		return api.Rule{}, err
	}
	return p.rule, nil
}

func (p *parser) action() error {
	w, ok := p.peek()
	if !ok {
		if p.pos == 0 {
			return fmt.Errorf("rule: %w; expected allow or deny", ErrNoRule)
		}
		return fmt.Errorf("rule: %w after %s; expected allow or deny", ErrNoRule, quote(p.args[p.pos-1]))
	}
	if w != api.ActionAllow && w != api.ActionDeny {
		if strings.HasPrefix(w, "--at") && p.used["--at"] {
			return fmt.Errorf("rule: --at given twice")
		}
		return p.unexpected(p.actionExpected())
	}
	p.rule.Action = w
	p.use(w)
	return nil
}

// actionExpected offers --at only where ParseCommand would accept it.
func (p *parser) actionExpected() []string {
	if p.pos > 0 && !p.used["--at"] {
		return []string{"--at=N", "allow", "deny"}
	}
	return []string{"allow", "deny"}
}

func (p *parser) protocol() error {
	w, _ := p.peek()
	switch w {
	case api.ProtocolTCP, api.ProtocolUDP:
		p.rule.Protocol = w
		p.use(w)
	case api.ProtocolICMP, api.ProtocolICMPv6:
		p.rule.Protocol = w
		p.use(w)
		return p.icmpFields()
	}
	return nil
}

func (p *parser) icmpFields() error {
	w, _ := p.peek()
	if w == "code" {
		return fmt.Errorf(`rule: "code" needs "type" first, e.g. %s type 3 code 1`, p.rule.Protocol)
	}
	if w != "type" {
		return nil
	}
	p.use(w)
	t, err := p.icmpNumber(w)
	if err != nil {
		return err
	}
	p.rule.ICMPType = &t
	if w, _ = p.peek(); w != "code" {
		return nil
	}
	p.use(w)
	c, err := p.icmpNumber(w)
	if err != nil {
		return err
	}
	p.rule.ICMPCode = &c
	return nil
}

func (p *parser) icmpNumber(field string) (int, error) {
	w, ok := p.peek()
	if !ok {
		return 0, p.missing("number", "0-255")
	}
	n, err := parseNumber(w, 255)
	if err != nil {
		return 0, fmt.Errorf("rule: bad icmp %s %s: want a number 0-255", field, quote(w))
	}
	p.pos++
	return n, nil
}

// clauses reads from and to, in either order, each at most once.
func (p *parser) clauses() error {
	for {
		w, ok := p.peek()
		if !ok {
			return nil
		}
		var e *api.EntityMatch
		switch {
		case w == "from" && !p.used[w]:
			e = &p.rule.Src
		case w == "to" && !p.used[w]:
			e = &p.rule.Dst
		default:
			return p.unexpected(p.expected(nil))
		}
		p.use(w)
		if err := p.entity(w, e); err != nil {
			return err
		}
	}
}

// expected lists what may follow the current word; fields are the
// unused ports/tag/cidr keywords of the clause being read, if any.
func (p *parser) expected(fields []string) []string {
	var exp []string
	if !p.used["from"] && !p.used["to"] {
		isICMP := p.rule.Protocol == api.ProtocolICMP || p.rule.Protocol == api.ProtocolICMPv6
		switch {
		case p.rule.Protocol == "":
			exp = append(exp, "tcp", "udp", "icmp", "icmpv6")
		case isICMP && p.rule.ICMPType == nil:
			exp = append(exp, "type")
		case isICMP && p.rule.ICMPCode == nil:
			exp = append(exp, "code")
		}
	}
	exp = append(exp, fields...)
	for _, c := range []string{"from", "to"} {
		if !p.used[c] {
			exp = append(exp, c)
		}
	}
	return append(exp, "end of rule")
}

var entityFields = []string{"ports", "tag", "cidr"}

// entity reads the ports/tag/cidr of one from or to clause, in any order.
func (p *parser) entity(side string, e *api.EntityMatch) error {
	seen := make(map[string]bool, len(entityFields))
	for {
		w, ok := p.peek()
		if !ok || !isEntityField(w) {
			return p.endEntity(seen, ok)
		}
		if seen[w] {
			return fmt.Errorf("rule: %s given twice after %s", quote(w), quote(side))
		}
		seen[w] = true
		p.pos++
		v, ok := p.peek()
		if !ok {
			return p.missing("value", fieldHint[w])
		}
		if err := setField(e, w, v); err != nil {
			return err
		}
		p.pos++
	}
}

// endEntity decides whether the clause may end at the current word: it
// must have matched something, and only another clause or the end of the
// rule may follow.
func (p *parser) endEntity(seen map[string]bool, more bool) error {
	if len(seen) == 0 {
		if !more {
			return p.missing("ports, tag or cidr", "")
		}
		return p.unexpected(entityFields)
	}
	if !more {
		return nil
	}
	w := p.args[p.pos]
	if (w == "from" || w == "to") && !p.used[w] {
		return nil
	}
	var rest []string
	for _, f := range entityFields {
		if !seen[f] {
			rest = append(rest, f)
		}
	}
	return p.unexpected(p.expected(rest))
}

func isEntityField(w string) bool {
	return w == "ports" || w == "tag" || w == "cidr"
}

var fieldHint = map[string]string{
	"ports": "a list such as 80,443,1000:2000",
	"tag":   "a tag name",
	"cidr":  "a CIDR such as 10.0.0.0/8",
}

// setField takes values literally, even keywords: `from tag to` is the tag
// "to", as in the original docopt grammar, which keeps Format reversible.
func setField(e *api.EntityMatch, field, v string) error {
	switch field {
	case "ports":
		ports, err := ParsePorts(v)
		if err != nil {
			return fmt.Errorf("rule: %w", err)
		}
		e.Ports = ports
	case "tag":
		if err := api.ValidateName("tag", v); err != nil {
			return fmt.Errorf("rule: %w", err)
		}
		e.Tag = v
	case "cidr":
		prefix, err := api.ParseCIDR(v)
		if err != nil {
			return fmt.Errorf("rule: %w", err)
		}
		e.CIDR = prefix.String()
	}
	return nil
}
