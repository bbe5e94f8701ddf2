// Package dockerfwd keeps the iptables filter FORWARD chain from dropping
// workload traffic on hosts where a Docker engine manages iptables.
//
// An engine that turns on forwarding sets the FORWARD policy to DROP. Our
// policy lives in an nftables table of its own, and a packet passes only
// if every base chain on its hook accepts it: an accept in our table cannot
// undo a drop in the engine's. So, as Docker documents, we add rules to
// its DOCKER-USER chain (or to FORWARD when the policy is DROP without an
// engine chain) that accept what goes to or from workload interfaces,
// leaving the decision to our own table.
package dockerfwd

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Rules are what we make sure of, in this order at the top of the chain.
var Rules = [][]string{
	{"-i", "cali+", "-j", "ACCEPT", "-m", "comment", "--comment", "calico: workload traffic is policed by table inet calico"},
	{"-o", "cali+", "-j", "ACCEPT", "-m", "comment", "--comment", "calico: workload traffic is policed by table inet calico"},
}

// Ensure adds the rules where needed, for IPv4 and IPv6, and tells which
// chains it changed. A host without iptables, or whose FORWARD chain
// accepts by default with no engine chain, is left alone.
func Ensure(ctx context.Context) (changed []string, err error) {
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, lerr := exec.LookPath(bin); lerr != nil {
			continue
		}
		chain, ok := chainFor(ctx, bin)
		if !ok {
			continue
		}
		for i, r := range Rules {
			if run(ctx, bin, append([]string{"-C", chain}, r...)...) == nil {
				continue
			}
			args := append([]string{"-I", chain, fmt.Sprint(i + 1)}, r...)
			if rerr := run(ctx, bin, args...); rerr != nil {
				return changed, fmt.Errorf("%s %s: %w", bin, strings.Join(args, " "), rerr)
			}
			changed = append(changed, bin+" "+chain)
		}
	}
	return changed, nil
}

// chainFor picks DOCKER-USER when the engine made it, else FORWARD when its
// policy drops.
func chainFor(ctx context.Context, bin string) (string, bool) {
	if run(ctx, bin, "-S", "DOCKER-USER") == nil {
		return "DOCKER-USER", true
	}
	out, err := exec.CommandContext(ctx, bin, "-w", "5", "-S", "FORWARD").Output()
	if err != nil {
		return "", false
	}
	return "FORWARD", strings.Contains(string(out), "-P FORWARD DROP")
}

func run(ctx context.Context, bin string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Remove deletes our rules from DOCKER-USER and FORWARD, for IPv4 and IPv6
// (uninstall), and tells which chains it changed. Chains and other rules
// stay: they are the engine's.
func Remove(ctx context.Context) (changed []string, err error) {
	for _, bin := range []string{"iptables", "ip6tables"} {
		if _, lerr := exec.LookPath(bin); lerr != nil {
			continue
		}
		for _, chain := range []string{"DOCKER-USER", "FORWARD"} {
			for _, r := range Rules {
				// -D removes one copy: repeat while one is there.
				for n := 0; n < 10 && run(ctx, bin, append([]string{"-C", chain}, r...)...) == nil; n++ {
					if derr := run(ctx, bin, append([]string{"-D", chain}, r...)...); derr != nil {
						return changed, fmt.Errorf("%s -D %s: %w", bin, chain, derr)
					}
					changed = append(changed, bin+" "+chain)
				}
			}
		}
	}
	return changed, nil
}
