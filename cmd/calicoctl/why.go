package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/client"
)

func whyCmd() *cobra.Command {
	var (
		req    client.WhyRequest
		port   uint16
		format string
	)
	cmd := &cobra.Command{
		Use:   "why SRC DST [--port N] [--proto tcp|udp|icmp] [-o text|json]",
		Short: "Say whether SRC can open a flow to DST, and which rule decides, from the datastore",
		Long: `Say whether SRC can open a flow to DST and which rule decides it, computed
from the datastore as every node's agent computes its nftables and routes.

SRC and DST are workload names (NODE/NAME when two nodes have one of that
name), addresses, or outside. The first line is the verdict, allowed or
denied (the exit status is 0 either way); then each step: anti-spoofing,
the control-plane guard, the source's egress and the destination's ingress
(label policies in order, then profiles), NAT and the route.`,
		Args: exactArgs(2),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("-o %q: want text or json", format)
			}
			req.Src, req.Dst, req.Port = args[0], args[1], port
			ans, err := c.Why(cmd.Context(), req)
			if err != nil {
				return err
			}
			if format == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(ans)
			}
			printWhy(os.Stdout, ans)
			return nil
		}),
	}
	cmd.Flags().StringVar(&req.Proto, "proto", "", "tcp, udp or icmp (default: icmp echo, or tcp with --port)")
	cmd.Flags().Uint16Var(&port, "port", 0, "destination port of a tcp or udp flow")
	cmd.Flags().StringVarP(&format, "output", "o", "text", "output format: text or json")
	return cmd
}

// printWhy writes the verdict, the flow, then one line per step.
func printWhy(w io.Writer, a *client.WhyAnswer) {
	fmt.Fprintln(w, a.Verdict)
	fmt.Fprintln(w, a.FlowLine())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range a.Steps {
		node := s.Node
		if node == "" {
			node = "-"
		}
		what := s.What
		if s.Rule != "" {
			what += ": " + s.Rule
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Stage, node, s.Verdict, what)
	}
	tw.Flush()
	for _, n := range a.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
}
