// Package selector parses and evaluates label selectors in Calico's
// grammar, the language policies use to pick endpoints and network sets:
//
//	all()                       every labelled thing
//	has(k)  !has(k)             the label is present / absent
//	k == "v"  k != "v"          equal / not equal (absent counts as not equal)
//	k in {"a", "b"}             one of the values (absent: false)
//	k not in {"a", "b"}         none of them (absent: true)
//	k starts with "p"  k ends with "s"  k contains "x"   (absent: false)
//	!e   e && e   e || e   ( e )
//
// Strings take single or double quotes and have no escapes (Calico's have
// none either). && binds tighter than ||; ! binds tightest. An empty
// selector is an error: write all() to mean everything.
//
// Parsing never panics whatever the input (fuzzed), errors name the column
// (1-based, in bytes) and what was expected there, and String gives a
// canonical form: two selectors that print the same match the same labels,
// so the canonical form can name the set of addresses a selector picks.
package selector

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Selector is a parsed selector.
type Selector struct{ root node }

// Labels are an endpoint's or a network set's labels.
type Labels map[string]string

// Matches reports whether labels satisfy the selector.
func (s *Selector) Matches(l Labels) bool { return s.root.eval(l) }

// String is the canonical form.
func (s *Selector) String() string {
	var b strings.Builder
	s.root.write(&b)
	return b.String()
}

// LabelKeys lists, sorted and unique, the label keys the selector reads:
// a change to another label can never change its result.
func (s *Selector) LabelKeys() []string {
	seen := map[string]bool{}
	s.root.keys(seen)
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// MaxLen bounds a selector's length; policies are written by people, and a
// bound keeps a hostile record from costing the agent much.
const MaxLen = 4096

// maxDepth bounds nesting (parentheses and !), so recursion stays shallow.
const maxDepth = 64

// Error is a parse error at a position.
type Error struct {
	Input  string
	Column int // 1-based byte offset of the problem
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("selector %s: column %d: %s", strconv.Quote(clip(e.Input)), e.Column, e.Msg)
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// Parse parses a selector.
func Parse(s string) (*Selector, error) {
	if len(s) > MaxLen {
		return nil, &Error{Input: s, Column: MaxLen + 1, Msg: fmt.Sprintf("longer than %d bytes", MaxLen)}
	}
	p := &parser{in: s}
	p.next()
	if p.tok.kind == tEOF {
		return nil, &Error{Input: s, Column: 1, Msg: "empty selector; write all() to select everything"}
	}
	n := p.or(0)
	if p.err != nil {
		return nil, p.err
	}
	if p.tok.kind != tEOF {
		p.fail("unexpected %s; expected &&, || or the end", p.tok)
		return nil, p.err
	}
	return &Selector{root: n}, nil
}

// MustParse is Parse for selectors known to be valid (tests, constants).
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// --- lexer

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tString
	tAnd    // &&
	tOr     // ||
	tNot    // !
	tEq     // ==
	tNe     // !=
	tLParen // (
	tRParen // )
	tLBrace // {
	tRBrace // }
	tComma  // ,
	tBad
)

type token struct {
	kind tokKind
	text string // identifier or string value
	pos  int    // 0-based byte offset
}

func (t token) String() string {
	switch t.kind {
	case tEOF:
		return "end of selector"
	case tIdent:
		return strconv.Quote(t.text)
	case tString:
		return "string " + strconv.Quote(t.text)
	case tBad:
		return "character " + strconv.Quote(t.text)
	}
	return strconv.Quote(t.text)
}

type parser struct {
	in  string
	pos int
	tok token
	err *Error
}

func (p *parser) fail(format string, args ...any) node {
	if p.err == nil {
		p.err = &Error{Input: p.in, Column: p.tok.pos + 1, Msg: fmt.Sprintf(format, args...)}
	}
	// Stop consuming: every caller checks p.err before going on.
	p.tok = token{kind: tEOF, pos: len(p.in)}
	p.pos = len(p.in)
	return allNode{}
}

// isKeyByte: label keys as Kubernetes and Calico allow them (DNS prefix,
// '/', name with '-', '_', '.').
func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.' || c == '/'
}

func (p *parser) next() {
	for p.pos < len(p.in) && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t' || p.in[p.pos] == '\n' || p.in[p.pos] == '\r') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.in) {
		p.tok = token{kind: tEOF, pos: start}
		return
	}
	two := ""
	if p.pos+1 < len(p.in) {
		two = p.in[p.pos : p.pos+2]
	}
	switch two {
	case "&&":
		p.pos += 2
		p.tok = token{tAnd, "&&", start}
		return
	case "||":
		p.pos += 2
		p.tok = token{tOr, "||", start}
		return
	case "==":
		p.pos += 2
		p.tok = token{tEq, "==", start}
		return
	case "!=":
		p.pos += 2
		p.tok = token{tNe, "!=", start}
		return
	}
	c := p.in[p.pos]
	single := map[byte]tokKind{'!': tNot, '(': tLParen, ')': tRParen, '{': tLBrace, '}': tRBrace, ',': tComma}
	if k, ok := single[c]; ok {
		p.pos++
		p.tok = token{k, string(c), start}
		return
	}
	if c == '"' || c == '\'' {
		end := strings.IndexByte(p.in[p.pos+1:], c)
		if end < 0 {
			p.tok = token{kind: tBad, text: string(c), pos: start}
			p.fail("string starting here is not closed")
			return
		}
		p.tok = token{tString, p.in[p.pos+1 : p.pos+1+end], start}
		p.pos += end + 2
		return
	}
	if isKeyByte(c) {
		for p.pos < len(p.in) && isKeyByte(p.in[p.pos]) {
			p.pos++
		}
		p.tok = token{tIdent, p.in[start:p.pos], start}
		return
	}
	// One rune, for the message.
	r := []rune(p.in[p.pos:])[0]
	p.tok = token{kind: tBad, text: string(r), pos: start}
	p.pos += len(string(r))
}

// --- parser: or := and { "||" and } ; and := unary { "&&" unary } ;
// unary := "!" unary | "(" or ")" | term

func (p *parser) or(depth int) node {
	n := p.and(depth)
	var kids []node
	for p.err == nil && p.tok.kind == tOr {
		if kids == nil {
			kids = []node{n}
		}
		p.next()
		kids = append(kids, p.and(depth))
	}
	if kids != nil {
		return newOr(kids)
	}
	return n
}

func (p *parser) and(depth int) node {
	n := p.unary(depth)
	var kids []node
	for p.err == nil && p.tok.kind == tAnd {
		if kids == nil {
			kids = []node{n}
		}
		p.next()
		kids = append(kids, p.unary(depth))
	}
	if kids != nil {
		return newAnd(kids)
	}
	return n
}

func (p *parser) unary(depth int) node {
	if depth > maxDepth {
		return p.fail("nested more than %d deep", maxDepth)
	}
	switch p.tok.kind {
	case tNot:
		p.next()
		return notNode{p.unary(depth + 1)}
	case tLParen:
		p.next()
		n := p.or(depth + 1)
		if p.err != nil {
			return n
		}
		if p.tok.kind != tRParen {
			return p.fail("unexpected %s; expected )", p.tok)
		}
		p.next()
		return n
	}
	return p.term()
}

func (p *parser) term() node {
	if p.tok.kind != tIdent {
		return p.fail("unexpected %s; expected a label name, has(...), all() or (", p.tok)
	}
	name := p.tok
	p.next()
	if p.tok.kind == tLParen && (name.text == "has" || name.text == "all") {
		p.next()
		if name.text == "all" {
			if p.tok.kind != tRParen {
				return p.fail("unexpected %s; all() takes no argument", p.tok)
			}
			p.next()
			return allNode{}
		}
		if p.tok.kind != tIdent {
			return p.fail("unexpected %s; expected a label name inside has(...)", p.tok)
		}
		key := p.tok.text
		p.next()
		if p.tok.kind != tRParen {
			return p.fail("unexpected %s; expected )", p.tok)
		}
		p.next()
		return hasNode{key}
	}
	key := name.text
	switch p.tok.kind {
	case tEq, tNe:
		op := p.tok.kind
		p.next()
		v, ok := p.str()
		if !ok {
			return allNode{}
		}
		if op == tEq {
			return eqNode{key, v}
		}
		return neNode{key, v}
	case tIdent:
		switch p.tok.text {
		case "in":
			p.next()
			return p.set(key, false)
		case "not":
			p.next()
			if p.tok.kind != tIdent || p.tok.text != "in" {
				return p.fail("unexpected %s; expected \"in\" after \"not\"", p.tok)
			}
			p.next()
			return p.set(key, true)
		case "starts", "ends":
			kind := p.tok.text
			p.next()
			if p.tok.kind != tIdent || p.tok.text != "with" {
				return p.fail("unexpected %s; expected \"with\" after %q", p.tok, kind)
			}
			p.next()
			v, ok := p.str()
			if !ok {
				return allNode{}
			}
			if kind == "starts" {
				return strNode{key, opPrefix, v}
			}
			return strNode{key, opSuffix, v}
		case "contains":
			p.next()
			v, ok := p.str()
			if !ok {
				return allNode{}
			}
			return strNode{key, opContains, v}
		}
	}
	return p.fail("unexpected %s after label %q; expected ==, !=, in, not in, starts with, ends with or contains", p.tok, key)
}

func (p *parser) str() (string, bool) {
	if p.tok.kind != tString {
		p.fail("unexpected %s; expected a quoted string", p.tok)
		return "", false
	}
	v := p.tok.text
	p.next()
	return v, true
}

func (p *parser) set(key string, negate bool) node {
	if p.tok.kind != tLBrace {
		return p.fail("unexpected %s; expected { starting a set of strings", p.tok)
	}
	p.next()
	vals := map[string]bool{}
	for p.tok.kind != tRBrace {
		v, ok := p.str()
		if !ok {
			return allNode{}
		}
		vals[v] = true
		switch p.tok.kind {
		case tComma:
			p.next()
			if p.tok.kind == tRBrace {
				return p.fail("unexpected }; expected a string after ,")
			}
		case tRBrace:
		default:
			return p.fail("unexpected %s; expected , or }", p.tok)
		}
	}
	p.next()
	n := inNode{key: key, vals: sortedKeys(vals)}
	if negate {
		return notInNode{n}
	}
	return n
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
