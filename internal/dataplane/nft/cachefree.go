package nft

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// The nft binary (1.0.6) reads a whole cache from the kernel before it
// evaluates a script, and what it reads depends on the commands: "add rule"
// makes it list every chain of the table, "add element" and "delete element"
// every element of every set. With 1000 endpoints and 200 label policies
// that is ~3400 chains and ~20,000 elements (~430 KB of netlink dumps) for
// a label change of 8 operations: most of nft's ~25 ms of CPU for it.
// cacheFree rewrites an incremental script into forms that need no such
// cache, in the same single transaction:
//
//   - the rules of a chain: "add chain C { R1 ; R2 ; }" (after "flush chain C"
//     for a chain that existed) instead of one "add rule" each, after an
//     "add set" declaring each named set they use (nft looks those up in
//     its cache or in the script);
//   - elements added to a set: "add set S { type ... ; elements = { ... } ; }",
//     which on an existing set of the same type only adds them;
//   - elements deleted from a set: "flush set S" then the set's whole new
//     content as above, for sets of at most rewriteSetLimit elements (larger
//     ones keep their "delete element" lines and pay for the cache).
//
//   - elements added to a dispatch map (an endpoint coming):
//     "add map M { type ifname : verdict ; elements = { ... } ; }", which on
//     the existing map only adds them. With 1000 endpoints "add element"
//     made nft list every element of every set first (~5000): most of the
//     time one more endpoint's nft run grew by with the endpoints there.
//
//   - a chain the script creates: one "add chain C { R1 ; R2 ; }" where
//     the declaration "add chain C" was, instead of the declaration and
//     the rules later, when every chain its rules jump to exists by then.
//     A second "add chain" of a chain the transaction already holds is an
//     update: the kernel keeps that transaction on its destroy list, and
//     when nft closes its netlink socket (nft_rcv_nl_event) it waits for
//     the destroy work and its RCU grace period, 8-20 ms on this machine
//     with the commit long visible. Every new endpoint paid that: its
//     nft run took 12-19 ms where 3 ms did the work, and the agent's
//     endpoint pass waited for it (BenchmarkKernelOneMoreEndpoint, wall
//     per add next to 10 / 1000 endpoints: 15.7 / 18.8 ms before, 2.8 /
//     5.2 after).
//
// Elements deleted from a dispatch map (an endpoint going) keep their
// "delete element" lines: rewriting a map of every endpoint costs more.
// Those, a chain flushed for a rewrite and a chain deleted still end the
// run with the grace-period wait: the kernel frees them after it.

// rewriteSetLimit bounds the sets whose deletions are sent as a rewrite of
// the whole set: beyond it, writing every element costs more than nft's
// cache.
const rewriteSetLimit = 2000

func cacheFree(script string, prev, next *ruleset) string {
	var b strings.Builder
	done := map[string]bool{} // sets whose element lines were replaced
	keep := map[string]bool{} // sets whose element lines stay as they are
	declared := map[string]bool{}
	lines := strings.Split(strings.TrimSuffix(script, "\n"), "\n")
	early := newChainBodies(lines, prev)
	// declareSets declares the named sets and maps rules use: nft
	// resolves one only from its cache or from the script itself (an
	// "add set" or "add map" of an existing one with the same type
	// changes nothing).
	declareSets := func(rules []string) {
		for _, r := range rules {
			for _, m := range setRefRE.FindAllStringSubmatch(r, -1) {
				if declared[m[1]] {
					continue
				}
				if s, ok := next.Sets[m[1]]; ok {
					fmt.Fprintf(&b, "add set inet %s %s { %s }\n", TableName, m[1], setDecl(s))
					declared[m[1]] = true
				} else if isDispatchMap(m[1]) {
					// A label policy's Pass: "vmap @pass-in".
					fmt.Fprintf(&b, "add map inet %s %s { type %s ; }\n", TableName, m[1], mapType(m[1]))
					declared[m[1]] = true
				}
			}
		}
	}
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if body, ok := early.at[i]; ok {
			declareSets(body.rules)
			fmt.Fprintf(&b, "add chain inet %s %s { %s }\n", TableName, body.chain, strings.Join(append(body.head, body.rules...), " ; ")+" ;")
			continue
		}
		if n, ok := early.skip[i]; ok {
			i += n - 1 // the rules went with the chain's declaration
			continue
		}
		if name, elems, ok := dispatchAdd(line); ok {
			// Consecutive adds to the same map go in one statement; a
			// delete between them keeps its place.
			for i+1 < len(lines) {
				n, e, ok := dispatchAdd(lines[i+1])
				if !ok || n != name {
					break
				}
				elems += ", " + e
				i++
			}
			fmt.Fprintf(&b, "add map inet %s %s { type %s ; elements = { %s } ; }\n", TableName, name, mapType(name), elems)
			continue
		}
		if name, ok := elementTarget(line); ok {
			if _, isSet := next.Sets[name]; !isSet || keep[name] {
				b.WriteString(line + "\n")
				continue
			}
			if done[name] {
				continue
			}
			s := next.Sets[name]
			add, del := diffSorted(prev.Sets[name].Elems, s.Elems)
			switch {
			case len(del) > 0 && len(s.Elems) > rewriteSetLimit:
				keep[name] = true
				b.WriteString(line + "\n")
				continue
			case len(del) > 0:
				fmt.Fprintf(&b, "flush set inet %s %s\n", TableName, name)
				add = s.Elems
			}
			if len(add) > 0 {
				fmt.Fprintf(&b, "add set inet %s %s { %s elements = { %s } ; }\n", TableName, name, setDecl(s), strings.Join(add, ", "))
				declared[name] = true
			}
			done[name] = true
			continue
		}
		if chain, rules := ruleRun(lines, i); rules != nil {
			i += len(rules) - 1
			declareSets(rules)
			fmt.Fprintf(&b, "add chain inet %s %s { %s ; }\n", TableName, chain, strings.Join(rules, " ; "))
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// chainBody is a new chain written whole at its declaration: its
// declaration's own statements (a comment) and its rules.
type chainBody struct {
	chain       string
	head, rules []string
}

// earlyBodies says which lines of a script change for cacheFree's one
// statement per new chain: at holds the body to write in place of a
// chain's declaration (by line), skip the length of the run of its rules
// to leave out (by the run's first line).
type earlyBodies struct {
	at   map[int]chainBody
	skip map[int]int
}

// newChainBodies finds the chains the script declares (absent from prev,
// neither flushed nor deleted in it) whose first run of rules can move to
// the declaration: none of those rules jumps to or goes to a chain the
// script declares later, which must exist when the rule is added.
func newChainBodies(lines []string, prev *ruleset) earlyBodies {
	e := earlyBodies{at: map[int]chainBody{}, skip: map[int]int{}}
	decl := map[string]int{} // chain -> line of its declaration
	heads := map[string][]string{}
	touched := map[string]bool{} // flushed or deleted
	type run struct {
		at    int
		rules []string
	}
	runs := map[string]run{} // chain -> its first run of rules
	for i := 0; i < len(lines); i++ {
		if name, head, ok := chainDecl(lines[i]); ok {
			if _, dup := decl[name]; !dup {
				decl[name], heads[name] = i, head
			}
			continue
		}
		for _, verb := range []string{"flush", "delete"} {
			if name, ok := strings.CutPrefix(lines[i], verb+" chain inet "+TableName+" "); ok {
				touched[name] = true
			}
		}
		if chain, rules := ruleRun(lines, i); rules != nil {
			if _, seen := runs[chain]; !seen {
				runs[chain] = run{i, rules}
			}
			i += len(rules) - 1
		}
	}
	for name, at := range decl {
		r, ok := runs[name]
		if _, existed := prev.Chains[name]; !ok || existed || touched[name] || r.at < at {
			continue
		}
		movable := true
		for _, rule := range r.rules {
			for _, m := range jumpRE.FindAllStringSubmatch(rule, -1) {
				if d, isNew := decl[m[2]]; isNew && d > at {
					movable = false
				}
			}
		}
		if movable {
			e.at[at], e.skip[r.at] = chainBody{chain: name, head: heads[name], rules: r.rules}, len(r.rules)
		}
	}
	return e
}

// ruleRun is the chain and the rules of the run of "add rule" lines for
// one chain that starts at lines[i]; no rules when lines[i] is no rule.
func ruleRun(lines []string, i int) (chain string, rules []string) {
	chain, rule, ok := ruleOf(lines[i])
	if !ok {
		return "", nil
	}
	rules = []string{rule}
	for _, l := range lines[i+1:] {
		c, r, ok := ruleOf(l)
		if !ok || c != chain {
			break
		}
		rules = append(rules, r)
	}
	return chain, rules
}

// chainDecl is the chain an "add chain" line of our table declares, and
// what its braces hold (a comment), when it declares no rules.
func chainDecl(line string) (name string, head []string, ok bool) {
	rest, ok := strings.CutPrefix(line, "add chain inet "+TableName+" ")
	if !ok {
		return "", nil, false
	}
	name, block, hasBlock := strings.Cut(rest, " ")
	if !hasBlock {
		return name, nil, true
	}
	inner, ok := strings.CutPrefix(block, "{ ")
	if inner, ok = strings.CutSuffix(inner, " ; }"); !ok || !strings.HasPrefix(inner, "comment ") || strings.Contains(inner, ";") {
		return "", nil, false
	}
	return name, []string{inner}, true
}

// jumpRE finds the chains a rule jumps to or goes to.
var jumpRE = regexp.MustCompile(`\b(jump|goto) ([A-Za-z0-9_.-]+)`)

// setRefRE finds the named sets a rule uses (@name).
var setRefRE = regexp.MustCompile(`@([A-Za-z0-9_.-]+)`)

// setDecl is a set's type and flags as nft declares them, each ended by ";".
func setDecl(s setSpec) string {
	d := "type " + s.Type + " ;"
	if s.TypeOf != "" {
		d = "typeof " + s.TypeOf + " ;"
	}
	if s.Interval {
		d += " flags interval ;"
	}
	return d
}

// elementTarget is the set or map an "add element" or "delete element" line
// of our table names.
func elementTarget(line string) (string, bool) {
	for _, verb := range []string{"add", "delete"} {
		if rest, ok := strings.CutPrefix(line, verb+" element inet "+TableName+" "); ok {
			name, _, _ := strings.Cut(rest, " ")
			return name, true
		}
	}
	return "", false
}

// dispatchAdd is the map and the elements ("key : verdict", comma
// separated) of an "add element" line for one of our dispatch maps.
func dispatchAdd(line string) (name, elems string, ok bool) {
	rest, ok := strings.CutPrefix(line, "add element inet "+TableName+" ")
	if !ok {
		return "", "", false
	}
	name, rest, _ = strings.Cut(rest, " ")
	if !isDispatchMap(name) {
		return "", "", false
	}
	elems, ok = strings.CutPrefix(rest, "{ ")
	if elems, ok = strings.CutSuffix(elems, " }"); !ok || elems == "" {
		return "", "", false
	}
	return name, elems, true
}

// isDispatchMap says whether name is one of the interface -> verdict maps.
func isDispatchMap(name string) bool {
	switch name {
	case mapFromWl, mapToWl, mapPassIn, mapPassOut, mapGrpFrom, mapGrpTo:
		return true
	}
	return false
}

// ruleOf splits an "add rule" line of our table into its chain and rule.
func ruleOf(line string) (chain, rule string, ok bool) {
	rest, ok := strings.CutPrefix(line, "add rule inet "+TableName+" ")
	if !ok {
		return "", "", false
	}
	chain, rule, ok = strings.Cut(rest, " ")
	return chain, rule, ok
}

// runScript runs an nft script in one transaction, in the network
// namespace of the calling thread.
func runScript(ctx context.Context, nftPath, script string) error {
	cmd := exec.CommandContext(ctx, nftPath, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
