package resource

import (
	"fmt"

	"github.com/goccy/go-yaml/ast"
)

// MaxAliasGrowth bounds how many values YAML aliases may add to one
// document when they are expanded. The decoder copies an alias's whole
// value at each use, and each level of aliases multiplies: a 55 KB file
// of rules that name a list of nets by alias (&n, then *n in 8000 rules)
// decoded to one policy whose JSON was 249 MB, and at the 4 MB input
// limit to far more than any memory ("billion laughs"). A file that uses
// aliases to share a few rules stays far below this.
const MaxAliasGrowth = 1 << 20

// checkAliases refuses a document whose aliases would expand it by more
// than MaxAliasGrowth values. It counts without expanding: each anchor's
// expanded size is remembered when the anchor is met (YAML anchors come
// before their aliases; a later anchor of the same name replaces it).
func checkAliases(n int, body ast.Node) error {
	anchors := map[string]int{}
	expanded := 0
	var walk func(node ast.Node) int
	walk = func(node ast.Node) int {
		if node == nil {
			return 0
		}
		switch v := node.(type) {
		case *ast.AliasNode:
			if v.Value == nil {
				return 1
			}
			if size, ok := anchors[v.Value.GetToken().Value]; ok {
				expanded += size - 1
				return size
			}
			return 1
		case *ast.AnchorNode:
			size := walk(v.Value)
			if v.Name != nil {
				anchors[v.Name.GetToken().Value] = size
			}
			return size
		case *ast.TagNode:
			return walk(v.Value)
		case *ast.MappingNode:
			size := 1
			for _, kv := range v.Values {
				size += walk(kv)
			}
			return size
		case *ast.MappingValueNode:
			return 1 + walk(v.Key) + walk(v.Value)
		case *ast.MappingKeyNode:
			return walk(v.Value)
		case *ast.SequenceNode:
			size := 1
			for _, item := range v.Values {
				size += walk(item)
			}
			return size
		}
		return 1
	}
	walk(body)
	if expanded > MaxAliasGrowth {
		p := body.GetToken().Position
		return &Error{Doc: n, Line: p.Line, Column: p.Column,
			Msg: fmt.Sprintf("its aliases (*name) would expand it by %d values, more than %d: write the repeated parts out, or split the document", expanded, MaxAliasGrowth)}
	}
	return nil
}
