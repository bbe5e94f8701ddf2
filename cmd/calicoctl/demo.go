package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/output"
	"github.com/calico-go/calico/internal/walkthrough"
)

const demoPrefix = "cdemo"

func demoCmd() *cobra.Command {
	var keep, noThroughput bool
	var seconds int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the seed's two-host walkthrough on this machine, with network namespaces as hosts",
		Long: `Builds two hosts on one L2 fabric plus an outside network, all as network
namespaces; starts a datastore on host1 and calico-node on both; adds the
seed's pool (--ipip --nat-outgoing: IPIP through the kernel's tunl0, or the
eBPF path where the kernel has no ipip module), workers 1 and 2 on host1 and
worker 3 on host2, profiles
PROF_1 and PROF_2; then checks what the walkthrough promises and measures
throughput with iperf3. Exits 0 only when every check meets its expectation.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDemo(cmd.Context(), keep, noThroughput, seconds)
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the lab up to explore (tear down with `calicoctl demo down`)")
	cmd.Flags().BoolVar(&noThroughput, "no-throughput", false, "skip the iperf3 measurements")
	cmd.Flags().IntVar(&seconds, "seconds", 5, "seconds per iperf3 run")
	cmd.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "Tear down labs left by `calicoctl demo --keep`",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := walkthrough.Down(demoPrefix); err != nil {
				return err
			}
			fmt.Println("Demo labs removed")
			return nil
		},
	})
	return cmd
}

func runDemo(ctx context.Context, keep, noThroughput bool, seconds int) (err error) {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := siblingBinary("calico-node"); err != nil {
		return err
	}
	// A kept lab from an earlier run would hold the same names; clear it.
	walkthrough.Down(demoPrefix)
	start := time.Now()
	w, err := walkthrough.Build(ctx, walkthrough.Options{
		Bin:      filepath.Dir(self),
		Progress: os.Stdout,
		Prefix:   demoPrefix,
		PoolArgs: []string{"--ipip", "--nat-outgoing"}, // the seed's pool, as written
	})
	if err != nil {
		return err
	}
	defer func() {
		if keep && ctx.Err() == nil {
			printExplore(w)
			return
		}
		fmt.Println("==> tearing the lab down")
		w.Close()
	}()
	if err := w.Seed(ctx); err != nil {
		return err
	}
	out, _ := w.Ctl(ctx, w.Hosts[0], "endpoint", "show")
	fmt.Print(indent(out))
	// How host1 carries the IPIP pool (kernel tunl0, or eBPF where the
	// kernel has no ipip module), once its agent has reported it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		out, _ = w.Ctl(ctx, w.Hosts[0], "status")
		var lines []string
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "IPIP: ") || strings.HasPrefix(line, "problem: ") {
				lines = append(lines, "    host1 "+line)
			}
		}
		if len(lines) > 0 || time.Now().After(deadline) {
			fmt.Print(strings.Join(lines, "\n") + "\n")
			break
		}
	}
	checks, err := w.SeedChecks(ctx)
	if err != nil {
		return err
	}
	fmt.Println()
	t := &output.Table{Header: []string{"check", "from", "to", "expected", "result", ""}}
	failed := 0
	for _, c := range checks {
		verdict := "ok"
		if !c.OK() {
			verdict = "FAILED"
			failed++
		}
		t.Add(c.What, c.From, c.To, reach(c.Expect), reach(c.Got)+" ("+c.Detail+")", verdict)
	}
	t.Write(os.Stdout)
	if !noThroughput {
		fmt.Println()
		res, err := w.MeasureThroughput(ctx, seconds)
		if err != nil {
			return err
		}
		tt := &output.Table{Header: []string{"path (iperf3, 1 stream)", "gbit/s", "ratio to host-to-host", "retransmits"}}
		for _, r := range res {
			tt.Add(r.Path, fmt.Sprintf("%.2f", r.Gbps), fmt.Sprintf("%.2f", r.Ratio), fmt.Sprint(r.Retransmits))
		}
		fmt.Println()
		tt.Write(os.Stdout)
	}
	fmt.Printf("\n%d of %d checks met their expectation (%.0fs)\n", len(checks)-failed, len(checks), time.Since(start).Seconds())
	if failed > 0 {
		return fmt.Errorf("%d check(s) did not meet their expectation", failed)
	}
	return nil
}

func reach(b bool) string {
	if b {
		return "reaches"
	}
	return "blocked"
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func printExplore(w *walkthrough.World) {
	fmt.Printf("\nThe lab is up (id %s). To explore:\n", w.Lab.ID())
	for _, h := range w.Hosts {
		fmt.Printf("  ip netns exec %s env ETCD_AUTHORITY=%s CALICO_NODENAME=%s CALICO_STATE_DIR=%s bash   # %s\n", h.Name, w.Etcd, h.Label, w.StateDir, h.Label)
	}
	for _, n := range []string{"worker-1", "worker-2", "worker-3"} {
		if wl := w.Workloads[n]; wl != nil {
			fmt.Printf("  ip netns exec %s bash   # %s (%s) on %s\n", wl.Netns.Name, n, wl.IP, wl.Host.Label)
		}
	}
	fmt.Println("Tear it down with: calicoctl demo down")
}
