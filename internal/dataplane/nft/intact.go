package nft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// tableComment marks the table as ours: planFull writes it, and a table
// inet calico without it (somebody else's, or one made by hand) is not
// trusted to guard anything.
const tableComment = "calico-go workload policy and NAT; owned by calico-node, edits are overwritten"

// TableState is what the kernel's table inet calico guards, as read by
// Intact.
type TableState struct {
	// Whole: the table is ours and its fixed part is there: the
	// anti-spoofing chain, both forward chains and the input chain on
	// their hooks, each ending in its catch-all drop, and the input chain
	// sending VXLAN to vxlan-in and workloads to wl-to-host. Every
	// workload interface then meets its own chains or a drop.
	Whole bool
	// VXLANGuarded: vxlan-in ends in its drop (VXLAN was on when the
	// table was written), so a VXLAN device's datagrams are checked.
	VXLANGuarded bool
	// Why says what is missing when the table is not whole.
	Why string
}

// Intact reads the table inet calico the kernel holds now, whoever wrote
// it (an earlier run of the agent, typically), and says whether it guards
// this host's workloads. It writes nothing. A read that fails counts as no
// table: only a table seen whole is trusted.
func (e *Enforcer) Intact(ctx context.Context) TableState {
	if e.nftPath == "" {
		return TableState{Why: "no nft binary to read the table with"}
	}
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.nftPath, "list", "table", "inet", TableName).Output()
	if err != nil {
		return TableState{Why: fmt.Sprintf("no table inet %s in the kernel", TableName)}
	}
	return tableState(string(out))
}

// tableState judges the text `nft list table inet calico` printed.
func tableState(text string) TableState {
	comment, chains := parseListing(text)
	if comment != tableComment {
		return TableState{Why: fmt.Sprintf("table inet %s is not ours (its comment is %q)", TableName, comment)}
	}
	wild := `"` + WorkloadIfacePrefix + `*"`
	checks := []struct {
		chain, hook, last string
		has               []string
	}{
		{chain: chainSource, hook: "prerouting", last: "drop"},
		{chain: chainFwdEgress, hook: "forward", last: "iifname " + wild + " drop"},
		{chain: chainFwdIngress, hook: "forward", last: "oifname " + wild + " drop"},
		{chain: chainInput, hook: "input", has: []string{
			"meta nfproto ipv4 udp dport 4789 jump " + chainVXLANIn,
			"iifname " + wild + " goto " + chainWlToHost}},
		{chain: chainWlToHost, last: "drop"},
	}
	for _, c := range checks {
		lines, ok := chains[c.chain]
		if !ok {
			return TableState{Why: fmt.Sprintf("table inet %s has no chain %s", TableName, c.chain)}
		}
		if c.hook != "" && (len(lines) == 0 || !strings.Contains(lines[0], " hook "+c.hook+" ")) {
			return TableState{Why: fmt.Sprintf("chain %s is not on the %s hook", c.chain, c.hook)}
		}
		if c.last != "" && (len(lines) == 0 || lines[len(lines)-1] != c.last) {
			return TableState{Why: fmt.Sprintf("chain %s does not end in %q", c.chain, c.last)}
		}
		for _, h := range c.has {
			found := false
			for _, l := range lines {
				found = found || l == h
			}
			if !found {
				return TableState{Why: fmt.Sprintf("chain %s lacks %q", c.chain, h)}
			}
		}
	}
	vx, ok := chains[chainVXLANIn]
	if !ok {
		return TableState{Why: fmt.Sprintf("table inet %s has no chain %s", TableName, chainVXLANIn)}
	}
	return TableState{Whole: true, VXLANGuarded: len(vx) > 0 && vx[len(vx)-1] == "drop"}
}

// parseListing splits nft's listing of one table into the table's comment
// and each chain's lines (its hook line, then its rules; comments left
// out).
func parseListing(text string) (comment string, chains map[string][]string) {
	chains = map[string][]string{}
	var cur string // the chain being read; "" outside chains
	depth := 0
	for _, raw := range strings.Split(text, "\n") {
		l := strings.TrimSpace(raw)
		switch {
		case l == "":
		case strings.HasSuffix(l, "{"):
			depth++
			if depth == 2 && strings.HasPrefix(l, "chain ") {
				cur = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(l, "chain "), "{"))
				chains[cur] = nil
			}
		case l == "}":
			depth--
			if depth < 2 {
				cur = ""
			}
		case depth == 1 && strings.HasPrefix(l, "comment "):
			comment = strings.Trim(strings.TrimPrefix(l, "comment "), `"`)
		case depth == 2 && cur != "" && !strings.HasPrefix(l, "comment "):
			chains[cur] = append(chains[cur], l)
		}
	}
	return comment, chains
}

// faultWriteFails is a test-only fault point: with CALICO_FAULT set to
// "policy-write-fails:PATH", every policy write fails while the file PATH
// exists, as when nft is broken or the kernel refuses the transaction
// (test/security/policyfail_test.go; removing the file lifts the fault
// without restarting the agent). Never set it outside tests.
func faultWriteFails() error {
	const prefix = "policy-write-fails:"
	v := os.Getenv("CALICO_FAULT")
	if !strings.HasPrefix(v, prefix) {
		return nil
	}
	if _, err := os.Stat(strings.TrimPrefix(v, prefix)); err == nil {
		return errFault
	}
	return nil
}

var errFault = errors.New("test fault: policy writes fail (CALICO_FAULT)")
