package selector

import (
	"errors"
	"strings"
	"testing"
)

func TestMatches(t *testing.T) {
	web := Labels{"app": "web", "tier": "frontend", "env": "prod", "example.com/team": "blue"}
	db := Labels{"app": "db", "tier": "backend"}
	none := Labels{}
	for _, tc := range []struct {
		sel           string
		web, db, none bool
	}{
		{`all()`, true, true, true},
		{`has(app)`, true, true, false},
		{`!has(env)`, false, true, true},
		{`app == "web"`, true, false, false},
		{`app == 'web'`, true, false, false},
		{`app != "web"`, false, true, true}, // absent counts as not equal
		{`app in {"web", "db"}`, true, true, false},
		{`app in {}`, false, false, false},
		{`app not in {"web"}`, false, true, true}, // absent: not in any set
		{`env not in {}`, true, true, true},
		{`app starts with "w"`, true, false, false},
		{`app ends with "b"`, true, true, false},
		{`tier contains "end"`, true, true, false},
		{`tier contains ""`, true, true, false}, // present; absent never contains
		{`app == "web" && tier == "frontend"`, true, false, false},
		{`app == "web" || app == "db"`, true, true, false},
		{`!(app == "web")`, false, true, true},
		{`!app == "web"`, false, true, true}, // ! binds to the term
		{`has(app) && !has(env) || app == "web"`, true, true, false},
		{`has(app) && (!has(env) || app == "x")`, false, true, false},
		{`example.com/team == "blue"`, true, false, false},
		{`  app=="web"&&tier=="frontend"  `, true, false, false},
		{`!!has(app)`, true, true, false},
		{`((has(app)))`, true, true, false},
	} {
		s, err := Parse(tc.sel)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.sel, err)
			continue
		}
		for _, c := range []struct {
			name string
			l    Labels
			want bool
		}{{"web", web, tc.web}, {"db", db, tc.db}, {"none", none, tc.none}} {
			if got := s.Matches(c.l); got != c.want {
				t.Errorf("%q on %s = %v, want %v", tc.sel, c.name, got, c.want)
			}
		}
		// The canonical form parses to a selector that prints the same
		// and matches the same.
		s2, err := Parse(s.String())
		if err != nil {
			t.Errorf("canonical form %q of %q does not parse: %v", s.String(), tc.sel, err)
			continue
		}
		if s2.String() != s.String() {
			t.Errorf("canonical form not stable: %q -> %q", s.String(), s2.String())
		}
		for _, l := range []Labels{web, db, none} {
			if s.Matches(l) != s2.Matches(l) {
				t.Errorf("%q and its canonical form %q disagree on %v", tc.sel, s.String(), l)
			}
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{`b == "1" && a == "2"`, `a == "2" && b == "1"`},
		{`a == "x" || (b == "y" || c == "z")`, `c == "z" || a == "x" || b == "y"`},
		{`x in {"b", "a", "b"}`, `x in {'a','b'}`},
		{`has(a) && has(a)`, `has(a)`},
		{`(a == "1" || b == "2") && c == "3"`, `c == "3" && (b == "2" || a == "1")`},
		{`v == 'say "hi"'`, `v == 'say "hi"'`},
	} {
		a, b := MustParse(tc.a), MustParse(tc.b)
		if a.String() != b.String() {
			t.Errorf("%q -> %q but %q -> %q", tc.a, a.String(), tc.b, b.String())
		}
	}
	if got := MustParse(`(a == "1" || b == "2") && c == "3"`).String(); got != `(a == "1" || b == "2") && c == "3"` {
		t.Errorf("canonical form lost the parentheses: %q", got)
	}
}

func TestLabelKeys(t *testing.T) {
	got := strings.Join(MustParse(`app == "a" && !has(env) || tier in {"x"} || app starts with "q"`).LabelKeys(), ",")
	if got != "app,env,tier" {
		t.Errorf("LabelKeys = %s", got)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		sel  string
		col  int
		want string
	}{
		{``, 1, "empty selector"},
		{`   `, 1, "empty selector"},
		{`app ==`, 7, "expected a quoted string"},
		{`app == web`, 8, "expected a quoted string"},
		{`app = "web"`, 5, "expected ==, !=, in"},
		{`app == "web`, 8, "not closed"},
		{`has(app`, 8, "expected )"},
		{`has("app")`, 5, "label name inside has"},
		{`all(x)`, 5, "all() takes no argument"},
		{`app in {"a" "b"}`, 13, "expected , or }"},
		{`app in {"a",}`, 13, "expected a string after ,"},
		{`app in "a"`, 8, "expected { starting a set"},
		{`app not "a"`, 9, `expected "in" after "not"`},
		{`app starts "a"`, 12, `expected "with"`},
		{`app == "a" &&`, 14, "expected a label name"},
		{`app == "a" ||| b == "c"`, 14, "expected a label name"},
		{`(app == "a"`, 12, "expected )"},
		{`app == "a")`, 11, "expected &&, || or the end"},
		{`app == "a" b == "c"`, 12, "expected &&, || or the end"},
		{`app == "a" & b == "c"`, 12, `character "&"`},
		{`app == "a" § b`, 12, `character "§"`},
		{strings.Repeat("!", 100) + "has(a)", 66, "nested more than 64 deep"},
		{strings.Repeat("(", 100) + "has(a)" + strings.Repeat(")", 100), 66, "nested more than 64 deep"},
		{strings.Repeat("a", MaxLen+1), MaxLen + 1, "longer than"},
	} {
		_, err := Parse(tc.sel)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("Parse(%q) = %v, want a positioned error", tc.sel, err)
			continue
		}
		if pe.Column != tc.col || !strings.Contains(pe.Msg, tc.want) {
			t.Errorf("Parse(%q): column %d %q; want column %d containing %q", tc.sel, pe.Column, pe.Msg, tc.col, tc.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error for %q spans lines: %q", tc.sel, err.Error())
		}
	}
}

// FuzzParse: no input panics, and every selector that parses has a
// canonical form that parses to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`all()`, `a == "b" && !has(c) || d in {"x", 'y'}`, `x not in {"a"}`, `k starts with "p" && k ends with 's' || k contains "q"`, `((!has(a)))`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		c := s.String()
		s2, err := Parse(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, in, err)
		}
		if s2.String() != c {
			t.Fatalf("canonical form of %q not stable: %q -> %q", in, c, s2.String())
		}
		l := Labels{"a": "b", "k": "pqs", "x": "y"}
		if s.Matches(l) != s2.Matches(l) {
			t.Fatalf("%q and %q disagree", in, c)
		}
	})
}
