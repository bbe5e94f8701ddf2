package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/output"
)

func ipamCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ipam", Short: "Inspect and repair address assignment"}
	show := &cobra.Command{
		Use:   "show",
		Short: "List address blocks, the host each belongs to, and their use",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			blocks, err := c.IPAM.Blocks(cmd.Context())
			if err != nil {
				return err
			}
			return output.Print(os.Stdout, f, blocks, func() *output.Table {
				t := &output.Table{Header: []string{"block", "host", "used", "free"}}
				for _, b := range blocks {
					t.Add(b.CIDR, b.Affinity, strconv.Itoa(b.Used), strconv.Itoa(b.Size-b.Used))
				}
				return t
			})
		}),
	}
	addOutputFlag(show)
	info := &cobra.Command{
		Use:   "info IP",
		Short: "Show what holds an address",
		Args:  exactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ip, err := parseIP(args[0])
			if err != nil {
				return err
			}
			f, err := format()
			if err != nil {
				return err
			}
			in, err := c.IPAM.Info(cmd.Context(), ip)
			if err != nil {
				return err
			}
			return output.Print(os.Stdout, f, in, func() *output.Table {
				t := &output.Table{Header: []string{"ip", "pool", "block", "host", "assigned", "handle"}}
				t.Add(in.IP, in.Pool, in.Block, in.Affinity, strconv.FormatBool(in.Assigned), in.Handle)
				return t
			})
		}),
	}
	addOutputFlag(info)
	var force bool
	release := &cobra.Command{
		Use:   "release IP",
		Short: "Free a leaked address (one whose holder has no endpoint; workloads normally release their own)",
		Args:  exactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ip, err := parseIP(args[0])
			if err != nil {
				return err
			}
			handle, err := c.ReleaseLeaked(cmd.Context(), ip, force)
			if err != nil {
				return err
			}
			fmt.Printf("Released %s (was held by %s)\n", ip, handle)
			return nil
		}),
	}
	release.Flags().BoolVar(&force, "force", false, "also free an address whose holder's endpoint exists (it may then be handed out twice)")
	check := &cobra.Command{
		Use:   "check",
		Short: "Find leaked or double-held addresses",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			rep, err := c.CheckIPAM(cmd.Context())
			if err != nil {
				return err
			}
			for _, l := range rep.Leaked {
				fmt.Printf("leaked: %s held by %s, which has no endpoint (free it with `calicoctl ipam release %s`)\n", l.IP, l.Handle, l.IP)
			}
			for _, p := range rep.Problems {
				fmt.Println("problem: " + p)
			}
			if !rep.OK() {
				return fmt.Errorf("ipam check found %d leaked address(es) and %d problem(s)", len(rep.Leaked), len(rep.Problems))
			}
			fmt.Println("IPAM is consistent: every assigned address belongs to an endpoint")
			return nil
		}),
	}
	cmd.AddCommand(show, info, release, check)
	return cmd
}

func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("bad IP address %q", s)
	}
	return a, nil
}
