package resource

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Error is a problem in one document of an input, at a line and column
// (1-based; 0 when the problem has no single place, like a duplicate).
type Error struct {
	Doc    int    // 1-based document number in the input
	Line   int    // 1-based
	Column int    // 1-based
	Field  string // the field's path, "spec.ingress[0].action"; "" for syntax
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d, column %d", e.Line, e.Column)
	} else {
		fmt.Fprintf(&b, "document %d", e.Doc)
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// MaxDocuments bounds one input; MaxBytes bounds its size.
const (
	MaxDocuments = 1000
	MaxBytes     = 4 << 20
)

// Decode reads every document of a YAML or JSON input ("---" separates YAML
// documents; empty documents are skipped) and validates it. It returns all
// resources or, if any document is bad, none and the errors of every bad
// document (errors.Join of *Error, in input order).
func Decode(data []byte) ([]Resource, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("input is %d bytes; at most %d are read", len(data), MaxBytes)
	}
	if err := checkNesting(data); err != nil {
		return nil, err
	}
	var out []Resource
	var errs []error
	seen := map[string]int{}
	n := 0
	for _, chunk := range splitDocuments(data) {
		file, err := parser.ParseBytes(chunk.text, 0)
		if err != nil {
			e := yamlError(n+1, err).(*Error)
			e.Line += chunk.line - 1
			return nil, e
		}
		if len(file.Docs) == 0 {
			continue
		}
		doc := file.Docs[0]
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, isNull := doc.Body.(*ast.NullNode); isNull {
			continue
		}
		n++
		if n > MaxDocuments {
			return nil, fmt.Errorf("more than %d documents; split the input", MaxDocuments)
		}
		if err := checkAliases(n, doc.Body); err != nil {
			errs = append(errs, shiftLines(err, chunk.line-1))
			continue
		}
		items, err := decodeDoc(n, doc.Body)
		if err != nil {
			errs = append(errs, shiftLines(err, chunk.line-1))
			continue
		}
		for _, it := range items {
			r := it.r
			key := r.GetKind() + "/" + r.GetName()
			if first, dup := seen[key]; dup {
				p := posOf(it.body, "$.metadata.name")
				errs = append(errs, &Error{Doc: n, Line: p.Line + chunk.line - 1, Column: p.Column,
					Field: it.field + "metadata.name", Msg: fmt.Sprintf("%s %q is also defined in document %d", r.GetKind(), r.GetName(), first)})
				continue
			}
			seen[key] = n
			out = append(out, r)
			if len(out) > MaxDocuments {
				return nil, fmt.Errorf("more than %d resources; split the input", MaxDocuments)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(out) == 0 {
		return nil, errors.New("no resources in the input")
	}
	return out, nil
}

// nodeToValue is yaml.NodeToValue made safe for hostile input: the library
// panics on some malformed documents (a bare tag as a sequence value, found
// by FuzzDecode), and a user's bad file must give an error, not a crash.
func nodeToValue(body ast.Node, v any, opts ...yaml.DecodeOption) (err error) {
	defer func() {
		if r := recover(); r != nil {
			p := body.GetToken().Position
			err = &Error{Line: p.Line, Column: p.Column, Msg: fmt.Sprintf("the YAML parser could not read this document (%v); check tags (!...) and indentation", r)}
		}
	}()
	return yaml.NodeToValue(body, v, opts...)
}

// decoded is one resource of a document and the node it came from (the
// document itself, or an item of a list), for positioned errors.
type decoded struct {
	r     Resource
	body  ast.Node
	field string // "" for a document, "items[3]." for an item of a list
}

// listSuffix ends the kind of a list document, as `calicoctl get -o json`
// prints several resources ("kind": "GlobalNetworkPolicyList", "items":
// [...]), so that output applies as it is. A plain "List" may hold items
// of either kind.
const listSuffix = "List"

// decodeDoc reads one document: a resource, or a list of them.
func decodeDoc(n int, body ast.Node) ([]decoded, error) {
	if !isMapping(body) {
		p := body.GetToken().Position
		return nil, &Error{Doc: n, Line: p.Line, Column: p.Column, Msg: "a document must be a mapping with apiVersion, kind, metadata and spec"}
	}
	var tm TypeMeta
	if err := nodeToValue(body, &tm); err != nil {
		return nil, yamlError(n, err)
	}
	if !strings.HasSuffix(tm.Kind, listSuffix) {
		r, err := decodeOne(n, body, "", "")
		if err != nil {
			return nil, err
		}
		return []decoded{{r, body, ""}}, nil
	}
	at := func(path, field, format string, args ...any) error {
		p := posOf(body, path)
		return &Error{Doc: n, Line: p.Line, Column: p.Column, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	itemKind := strings.TrimSuffix(tm.Kind, listSuffix)
	switch itemKind {
	case "", KindGlobalNetworkPolicy, KindGlobalNetworkSet:
	default:
		return nil, at("$.kind", "kind", "%q is not supported; want %s, %s or a list of them (%s%s)", tm.Kind, KindGlobalNetworkPolicy, KindGlobalNetworkSet, KindGlobalNetworkPolicy, listSuffix)
	}
	if tm.APIVersion != APIVersion {
		return nil, at("$.apiVersion", "apiVersion", "%q is not supported; want %s", tm.APIVersion, APIVersion)
	}
	var items *ast.SequenceNode
	for _, kv := range mappingValues(body) {
		key := kv.Key.GetToken().Value // unquoted, for JSON's "items" too
		switch key {
		case "apiVersion", "kind", "metadata":
		case "items":
			seq, ok := kv.Value.(*ast.SequenceNode)
			if !ok {
				if _, null := kv.Value.(*ast.NullNode); !null {
					return nil, at("$.items", "items", "must be a list of resources")
				}
				continue
			}
			items = seq
		default:
			p, _ := nodePos(kv.Key)
			return nil, &Error{Doc: n, Line: p.Line, Column: p.Column, Field: key, Msg: "unknown field; a list has apiVersion, kind, metadata and items"}
		}
	}
	if items == nil {
		return nil, nil
	}
	var out []decoded
	var errs []error
	for i, item := range items.Values {
		field := fmt.Sprintf("items[%d].", i)
		if !isMapping(item) {
			p := item.GetToken().Position
			errs = append(errs, &Error{Doc: n, Line: p.Line, Column: p.Column, Field: field[:len(field)-1], Msg: "an item must be a mapping with apiVersion, kind, metadata and spec"})
			continue
		}
		r, err := decodeOne(n, item, itemKind, field)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, decoded{r, item, field})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func isMapping(n ast.Node) bool {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return true
	}
	return false
}

func mappingValues(n ast.Node) []*ast.MappingValueNode {
	switch m := n.(type) {
	case *ast.MappingNode:
		return m.Values
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{m}
	}
	return nil
}

// decodeOne reads and validates one resource. want, when set, is the kind
// its list holds; field prefixes the field paths of its errors.
func decodeOne(n int, body ast.Node, want, field string) (Resource, error) {
	var tm TypeMeta
	if err := nodeToValue(body, &tm); err != nil {
		return nil, yamlError(n, err)
	}
	at := func(path, f, format string, args ...any) error {
		p := posOf(body, path)
		return &Error{Doc: n, Line: p.Line, Column: p.Column, Field: field + f, Msg: fmt.Sprintf(format, args...)}
	}
	if want != "" && tm.Kind != "" && tm.Kind != want {
		return nil, at("$.kind", "kind", "%q in a list of %s; a list holds one kind", tm.Kind, want)
	}
	if tm.APIVersion != APIVersion {
		if tm.APIVersion == "" {
			return nil, at("$", "apiVersion", "missing; want %s", APIVersion)
		}
		return nil, at("$.apiVersion", "apiVersion", "%q is not supported; want %s", tm.APIVersion, APIVersion)
	}
	var r Resource
	switch tm.Kind {
	case KindGlobalNetworkPolicy:
		r = &GlobalNetworkPolicy{}
	case KindGlobalNetworkSet:
		r = &GlobalNetworkSet{}
	case "":
		return nil, at("$", "kind", "missing; want %s or %s", KindGlobalNetworkPolicy, KindGlobalNetworkSet)
	default:
		return nil, at("$.kind", "kind", "%q is not supported; want %s or %s", tm.Kind, KindGlobalNetworkPolicy, KindGlobalNetworkSet)
	}
	if err := nodeToValue(body, r, yaml.DisallowUnknownField(), yaml.UseJSONUnmarshaler()); err != nil {
		return nil, yamlError(n, err)
	}
	var fe []fieldError
	switch v := r.(type) {
	case *GlobalNetworkPolicy:
		fe = validatePolicy(v)
	case *GlobalNetworkSet:
		fe = validateSet(v)
	}
	if len(fe) > 0 {
		var errs []error
		for _, e := range fe {
			errs = append(errs, at(e.yamlPath(), e.path, "%s", e.msg))
		}
		return nil, errors.Join(errs...)
	}
	return r, nil
}

// document is one YAML document of an input and the line it starts on.
type document struct {
	text []byte
	line int
}

// splitDocuments cuts an input at its "---" lines (a "---" at the start of
// a line, alone or before a comment or content), keeping each document's
// first line number so errors point into the whole input. The YAML
// library's own multi-document reading drops the document after an empty
// one, so documents are cut here and parsed one by one; a top-level scalar
// or sequence (which could hold such a line) is an error anyway.
func splitDocuments(data []byte) []document {
	lines := strings.SplitAfter(string(data), "\n")
	var docs []document
	var cur strings.Builder
	start := 1
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---\t") {
			docs = append(docs, document{[]byte(cur.String()), start})
			cur.Reset()
			// Content after the marker on the same line belongs to the
			// next document; pad so its columns stay right.
			cur.WriteString("   " + l[3:])
			start = i + 1
			continue
		}
		cur.WriteString(l)
	}
	return append(docs, document{[]byte(cur.String()), start})
}

// shiftLines moves the positions of errors by delta lines.
func shiftLines(err error, delta int) error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if pe, ok := e.(*Error); ok && pe.Line > 0 {
			c := *pe
			c.Line += delta
			out = append(out, &c)
			return
		}
		out = append(out, e)
	}
	walk(err)
	if len(out) == 1 {
		return out[0]
	}
	return errors.Join(out...)
}

// yamlError turns the YAML library's error into ours, keeping its position
// and dropping the source excerpt it would print over several lines.
func yamlError(doc int, err error) error {
	var re *Error
	if errors.As(err, &re) {
		re.Doc = doc
		return re
	}
	var ye yaml.Error
	if errors.As(err, &ye) {
		e := &Error{Doc: doc, Msg: strings.TrimSpace(ye.GetMessage())}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
		return e
	}
	return &Error{Doc: doc, Msg: firstLine(err.Error())}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

type pos struct{ Line, Column int }

// posOf finds the node at a YAML path ($.spec.ingress[0].action) and
// returns its position, falling back to the nearest parent that exists.
func posOf(body ast.Node, path string) pos {
	for {
		if p, err := yaml.PathString(path); err == nil {
			if node, err := p.FilterNode(body); err == nil && node != nil {
				if p, ok := nodePos(node); ok {
					return p
				}
			}
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 1 {
			p, _ := nodePos(body)
			return p
		}
		path = path[:i]
	}
}

// nodePos is where a node starts: a mapping at its first key (the library
// places a mapping at its first ':'), anything else at its token.
func nodePos(n ast.Node) (pos, bool) {
	switch m := n.(type) {
	case *ast.MappingNode:
		if len(m.Values) > 0 {
			return nodePos(m.Values[0])
		}
	case *ast.MappingValueNode:
		return nodePos(m.Key)
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return pos{tk.Position.Line, tk.Position.Column}, true
	}
	return pos{}, false
}
