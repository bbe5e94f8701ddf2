package resource

import "fmt"

// MaxNesting bounds how deeply a document may nest before the YAML parser
// reads it. The parser refuses more than 10000 levels itself, but only
// after work that grows much faster than the input: 100000 nested "["
// (200 KB) took it 58 s, and at the 4 MB input limit far longer. A policy
// nests about six levels deep.
const MaxNesting = 1000

// checkNesting scans data without parsing it and refuses a nesting deeper
// than MaxNesting: flow collections ("[", "{"), and sequences opened on
// one line ("- - - x"). Quoted text and comments are skipped. It errs only
// towards the parser: anything it cannot judge is left to the parser.
func checkNesting(data []byte) error {
	depth, dashes := 0, 0
	var quote byte
	lineStart := true
	line := 1
	for i := 0; i < len(data); i++ {
		c := data[i]
		if quote != 0 {
			switch {
			case quote == '"' && c == '\\':
				i++
			case c == quote:
				quote = 0
			case c == '\n':
				line++
			}
			continue
		}
		switch c {
		case '\n':
			line++
			lineStart, dashes = true, 0
			continue
		case '"', '\'':
			quote = c
		case '#':
			if i == 0 || data[i-1] == ' ' || data[i-1] == '\t' || data[i-1] == '\n' {
				for i+1 < len(data) && data[i+1] != '\n' {
					i++
				}
			}
		case '[', '{':
			depth++
		case ']', '}':
			if depth > 0 {
				depth--
			}
		case '-':
			// "- " at the start of a line, or after another "- ", opens
			// a sequence.
			if lineStart && (i+1 == len(data) || data[i+1] == ' ' || data[i+1] == '\n') {
				dashes++
				if depth+dashes > MaxNesting {
					return &Error{Line: line, Column: 1, Msg: fmt.Sprintf("nested more than %d levels deep", MaxNesting)}
				}
				continue
			}
		case ' ', '\t':
			continue
		}
		lineStart = false
		if depth+dashes > MaxNesting {
			return &Error{Line: line, Column: 1, Msg: fmt.Sprintf("nested more than %d levels deep", MaxNesting)}
		}
	}
	return nil
}
