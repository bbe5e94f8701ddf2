package docker

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// rootBefore is the root namespace's calico-related state when the package
// started (taken in TestMain's setup).
var rootBefore []string

// rootState lists what of calico's could be in the root network namespace,
// where the machine's engine lives: nftables tables, the cali rules of
// FORWARD and DOCKER-USER, workload and tunnel interfaces (and the
// driver's tmp* peers), routes of protocol 80, the plugin sockets.
func rootState() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(argv ...string) string {
		out, _ := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		return string(out)
	}
	var st []string
	for _, l := range strings.Split(run("nft", "list", "tables"), "\n") {
		if strings.Contains(l, "calico") {
			st = append(st, "nft: "+strings.TrimSpace(l))
		}
	}
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, chain := range []string{"FORWARD", "DOCKER-USER"} {
			for _, l := range strings.Split(run(bin, "-w", "-S", chain), "\n") {
				if strings.Contains(l, "cali") {
					st = append(st, bin+": "+l)
				}
			}
		}
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, "cali") || strings.HasPrefix(i.Name, "tmp") || strings.HasSuffix(i.Name, ".calico") {
			st = append(st, "link: "+i.Name)
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(run("ip", fam, "route", "show", "table", "all", "proto", "80"), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				st = append(st, "route: "+l)
			}
		}
	}
	socks, _ := filepath.Glob("/run/docker/plugins/calico*.sock")
	for _, s := range socks {
		st = append(st, "socket: "+s)
	}
	slices.Sort(st)
	return st
}

// TestZZRootNamespaceUnchanged runs last (files run in name order): every
// test of the package leaves the root namespace as it found it. The
// libnetwork driver makes its veths there (the machine's engine's
// namespace), so a leak shows here first.
func TestZZRootNamespaceUnchanged(t *testing.T) {
	var after []string
	deadline := time.Now().Add(15 * time.Second) // the last container's teardown may still be finishing
	for {
		after = rootState()
		if slices.Equal(after, rootBefore) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !slices.Equal(after, rootBefore) {
		var added, gone []string
		for _, s := range after {
			if !slices.Contains(rootBefore, s) {
				added = append(added, s)
			}
		}
		for _, s := range rootBefore {
			if !slices.Contains(after, s) {
				gone = append(gone, s)
			}
		}
		t.Errorf("the root namespace changed during the Docker tests:\n  added: %s\n  gone:  %s", fmt.Sprint(added), fmt.Sprint(gone))
	}
}
