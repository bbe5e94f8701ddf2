// Command calico-bench measures the network on namespace labs of this
// machine: throughput, latency, endpoint setup, policy scale and BGP
// convergence, side by side in one run. It is its own program so that
// calicoctl does not carry the lab, the benchmarks and the plotting library.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := benchCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: "+strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}

func benchCmd() *cobra.Command {
	var out string
	var quick bool
	var only []string
	var setupCount, burst, addSamples int
	var scaleRR, scaleMesh []int
	var runs, policyExtraRuns int
	var streams []int
	var paths []string
	cmd := &cobra.Command{
		Use:   "calico-bench [--out DIR] [--quick] [--only SECTION,...]",
		Short: "Measure throughput, latency, endpoint setup, policy scale and BGP convergence on namespace hosts",
		Long: `Builds namespace labs on this machine (as ` + "`calicoctl demo`" + ` does, with
the calicoctl and calico-node beside this binary) and measures,
side by side in one run:

  throughput    iperf3 host-to-host, workload-to-workload across hosts and on
                one host, and a bare veth; 1 and 4 streams, 3 runs each; then
                the cross-host pair with the nftables ruleset on and off
  vxlan         iperf3 across a router: host-to-host and a VXLAN pool, and
                the kernel's own VXLAN in bare namespaces (no agent, no
                nftables) against their host-to-host: the ceiling
  ipip          the same with the seed's --ipip pool (tunl0, or the eBPF
                path on kernels without the ipip module)
  latency       qperf tcp_lat/tcp_bw across hosts (netperf TCP_RR if qperf is
                missing) with 0, 100 and 1000 rules and endpoints, against a
                control pair whose policy never changes
  setup         container add (and the in-process call) to reachable from
                another host, 200 workloads one by one and in bursts of 20
  cni           the same through the calico CNI plugin, run by libcni as a
                runtime runs it (ADD, address from calico-ipam), then DEL
  policy        1000 endpoints in 100 profiles on one host: cold start, cost
                of one more endpoint, agent memory
  policy-v3     label policies: 1000 endpoints, 200 policies, 50 selectors
                through the nftables Enforcer in a namespace, then through
                calico-node on a lab host: cold start, p50/p99 of one label
                change (datastore write to the kernel's set), agent CPU per
                change and RSS
  controlplane  BGP full mesh of 5, 10, 20 hosts: new route on every host,
                idle agent CPU
  scale         a full mesh grown to 10, 25, 50 hosts and a world with two
                route reflectors grown to 10, 25, 50, 100: convergence after
                the last agent's start, a new route on every host, idle CPU
                and memory of all agents, etcd keys, watchers and load per
                change, and a datastore load model for 1000 and 5000 hosts

Writes DIR/results.json, DIR/results.md (metric, value, target, met?) and
PNG plots; a run of some sections (--only) keeps the other sections'
results found in DIR. With DIR/baseline.json (bench/ holds the run issue
19 was filed against) results.md compares issue 19's targets before and
now, and ratios.png plots them. The full run takes about 30 minutes on 2 cores
(throughput alone about 9, scale about 10), --quick about 3. Progress
goes to stderr. Needs root, iperf3 and qperf (or netperf). Missed targets are
reported, not errors: the exit status is non-zero only when a section could
not run.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			var plan *bench.Plan
			scaleSet := cmd.Flags().Changed("scale-sizes") || cmd.Flags().Changed("scale-mesh-sizes")
			tpSet := runs > 0 || cmd.Flags().Changed("policy-extra-runs") || len(streams) > 0 || len(paths) > 0
			if setupCount > 0 || burst > 0 || addSamples > 0 || scaleSet || tpSet {
				p := bench.DefaultPlan()
				if quick {
					p = bench.QuickPlan()
				}
				if setupCount > 0 {
					p.SetupCount = setupCount
				}
				if burst > 0 {
					p.Burst = burst
				}
				if addSamples > 0 {
					p.AddSamples = addSamples
				}
				if runs > 0 {
					p.Runs = runs
				}
				if cmd.Flags().Changed("policy-extra-runs") {
					p.PolicyExtraRuns = max(policyExtraRuns, 0)
				}
				if len(streams) > 0 {
					p.Streams = streams
				}
				p.Paths = paths
				for _, f := range []struct {
					name string
					val  []int
					dst  *[]int
				}{{"scale-sizes", scaleRR, &p.ScaleRRSizes}, {"scale-mesh-sizes", scaleMesh, &p.ScaleMeshSizes}} {
					if !cmd.Flags().Changed(f.name) {
						continue
					}
					sizes := slices.DeleteFunc(slices.Clone(f.val), func(n int) bool { return n == 0 })
					if !slices.IsSorted(sizes) || len(slices.Compact(slices.Clone(sizes))) != len(sizes) {
						return fmt.Errorf("--%s: the world grows, so sizes must ascend: %v", f.name, f.val)
					}
					*f.dst = sizes
				}
				plan = &p
			}
			res, err := bench.Run(cmd.Context(), bench.Options{
				Plan:     plan,
				Bin:      filepath.Dir(self),
				Out:      out,
				Quick:    quick,
				Only:     only,
				Progress: os.Stderr,
			})
			if res != nil {
				met, missed := 0, 0
				for _, m := range res.Metrics {
					if m.Met != nil && *m.Met {
						met++
					} else if m.Met != nil {
						missed++
					}
				}
				fmt.Printf("%d targets met, %d missed; results in %s\n", met, missed,
					strings.Join([]string{filepath.Join(out, "results.md"), filepath.Join(out, "results.json")}, " and "))
			}
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "bench", "directory for results.json, results.md and the plots")
	cmd.Flags().BoolVar(&quick, "quick", false, "fewer and shorter runs with smaller counts: a smoke test of a few minutes")
	cmd.Flags().StringSliceVar(&only, "only", nil, "run only these sections (comma-separated): "+strings.Join(bench.Sections, ", "))
	cmd.Flags().IntVar(&setupCount, "setup-count", 0, "workloads per mode in the setup and cni sections (default 200, --quick 20)")
	cmd.Flags().IntVar(&addSamples, "add-samples", 0, "endpoints added one by one at each count in the policy section (default 10, --quick 2)")
	cmd.Flags().IntVar(&burst, "burst", 0, "workloads added at once in the burst modes of setup and cni (default 20, --quick 10)")
	// Narrowing the throughput section, to repeat one comparison many
	// times on a loaded machine.
	cmd.Flags().IntVar(&runs, "runs", 0, "iperf3 rounds per path and stream count in throughput, vxlan, ipip and wireguard (default 3, --quick 1)")
	cmd.Flags().IntVar(&policyExtraRuns, "policy-extra-runs", 0, "extra rounds of only the saved ruleset and no ruleset in the throughput section's policy-cost ablation (default 6, --quick 0)")
	cmd.Flags().IntSliceVar(&streams, "streams", nil, "iperf3 stream counts (default 1,4)")
	cmd.Flags().StringArrayVar(&paths, "path", nil, "measure only this throughput path (repeatable; names as in results.md); naming policy-cost ablation states measures \"no ruleset\", the saved ruleset and those states only")
	// Sizes of the scale section, to iterate on one size (the issue's
	// targets apply to the largest reflector size given).
	cmd.Flags().IntSliceVar(&scaleRR, "scale-sizes", nil, "host counts the reflector world of the scale section grows through (default 10,25,50,100; 0: none)")
	cmd.Flags().IntSliceVar(&scaleMesh, "scale-mesh-sizes", nil, "host counts the full-mesh world of the scale section grows through (default 10,25,50; 0: none)")
	return cmd
}
