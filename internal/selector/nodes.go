package selector

import (
	"sort"
	"strings"
)

// node is one term of a parsed selector.
type node interface {
	eval(Labels) bool
	// write appends the canonical form.
	write(*strings.Builder)
	keys(map[string]bool)
}

type allNode struct{}

func (allNode) eval(Labels) bool         { return true }
func (allNode) write(b *strings.Builder) { b.WriteString("all()") }
func (allNode) keys(map[string]bool)     {}

type hasNode struct{ key string }

func (n hasNode) eval(l Labels) bool       { _, ok := l[n.key]; return ok }
func (n hasNode) write(b *strings.Builder) { b.WriteString("has(" + n.key + ")") }
func (n hasNode) keys(m map[string]bool)   { m[n.key] = true }

type eqNode struct{ key, val string }

func (n eqNode) eval(l Labels) bool { v, ok := l[n.key]; return ok && v == n.val }
func (n eqNode) write(b *strings.Builder) {
	b.WriteString(n.key + " == " + quote(n.val))
}
func (n eqNode) keys(m map[string]bool) { m[n.key] = true }

// neNode: absent or different, as Calico defines !=.
type neNode struct{ key, val string }

func (n neNode) eval(l Labels) bool { v, ok := l[n.key]; return !ok || v != n.val }
func (n neNode) write(b *strings.Builder) {
	b.WriteString(n.key + " != " + quote(n.val))
}
func (n neNode) keys(m map[string]bool) { m[n.key] = true }

type inNode struct {
	key  string
	vals []string // sorted, unique
}

func (n inNode) eval(l Labels) bool {
	v, ok := l[n.key]
	if !ok {
		return false
	}
	i := sort.SearchStrings(n.vals, v)
	return i < len(n.vals) && n.vals[i] == v
}
func (n inNode) write(b *strings.Builder) {
	b.WriteString(n.key + " in ")
	writeSet(b, n.vals)
}
func (n inNode) keys(m map[string]bool) { m[n.key] = true }

// notInNode: absent, or none of the values.
type notInNode struct{ in inNode }

func (n notInNode) eval(l Labels) bool { return !n.in.eval(l) }
func (n notInNode) write(b *strings.Builder) {
	b.WriteString(n.in.key + " not in ")
	writeSet(b, n.in.vals)
}
func (n notInNode) keys(m map[string]bool) { m[n.in.key] = true }

func writeSet(b *strings.Builder, vals []string) {
	b.WriteString("{")
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(v))
	}
	b.WriteString("}")
}

type strOp int

const (
	opPrefix strOp = iota
	opSuffix
	opContains
)

type strNode struct {
	key string
	op  strOp
	val string
}

func (n strNode) eval(l Labels) bool {
	v, ok := l[n.key]
	if !ok {
		return false
	}
	switch n.op {
	case opPrefix:
		return strings.HasPrefix(v, n.val)
	case opSuffix:
		return strings.HasSuffix(v, n.val)
	}
	return strings.Contains(v, n.val)
}
func (n strNode) write(b *strings.Builder) {
	op := [...]string{" starts with ", " ends with ", " contains "}[n.op]
	b.WriteString(n.key + op + quote(n.val))
}
func (n strNode) keys(m map[string]bool) { m[n.key] = true }

type notNode struct{ n node }

func (n notNode) eval(l Labels) bool { return !n.n.eval(l) }
func (n notNode) write(b *strings.Builder) {
	b.WriteString("!")
	switch n.n.(type) {
	case andNode, orNode, eqNode, neNode, inNode, notInNode, strNode:
		b.WriteString("(")
		n.n.write(b)
		b.WriteString(")")
	default:
		n.n.write(b)
	}
}
func (n notNode) keys(m map[string]bool) { n.n.keys(m) }

// andNode and orNode hold two or more children, flattened (an and inside an
// and is merged) and sorted by canonical form, so the order a user wrote
// them in does not change the canonical form.
type andNode []node
type orNode []node

func newAnd(kids []node) node {
	return andNode(flatten(kids, func(n node) ([]node, bool) { a, ok := n.(andNode); return a, ok }))
}
func newOr(kids []node) node {
	return orNode(flatten(kids, func(n node) ([]node, bool) { o, ok := n.(orNode); return o, ok }))
}

func flatten(kids []node, same func(node) ([]node, bool)) []node {
	var out []node
	for _, k := range kids {
		if inner, ok := same(k); ok {
			out = append(out, inner...)
		} else {
			out = append(out, k)
		}
	}
	forms := make([]string, len(out))
	for i, k := range out {
		var b strings.Builder
		k.write(&b)
		forms[i] = b.String()
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return forms[idx[a]] < forms[idx[b]] })
	sorted := make([]node, 0, len(out))
	for i, j := range idx {
		if i > 0 && forms[j] == forms[idx[i-1]] {
			continue // a && a is a
		}
		sorted = append(sorted, out[j])
	}
	return sorted
}

func (n andNode) eval(l Labels) bool {
	for _, k := range n {
		if !k.eval(l) {
			return false
		}
	}
	return true
}
func (n andNode) write(b *strings.Builder) {
	for i, k := range n {
		if i > 0 {
			b.WriteString(" && ")
		}
		if _, isOr := k.(orNode); isOr {
			b.WriteString("(")
			k.write(b)
			b.WriteString(")")
		} else {
			k.write(b)
		}
	}
}
func (n andNode) keys(m map[string]bool) {
	for _, k := range n {
		k.keys(m)
	}
}

func (n orNode) eval(l Labels) bool {
	for _, k := range n {
		if k.eval(l) {
			return true
		}
	}
	return false
}
func (n orNode) write(b *strings.Builder) {
	for i, k := range n {
		if i > 0 {
			b.WriteString(" || ")
		}
		k.write(b)
	}
}
func (n orNode) keys(m map[string]bool) {
	for _, k := range n {
		k.keys(m)
	}
}

// quote writes a value in double quotes, or single quotes when it holds a
// double quote (the lexer allows no value with both).
func quote(v string) string {
	if strings.Contains(v, `"`) {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}
