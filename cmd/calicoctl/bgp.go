package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/output"
)

func bgpCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bgp", Short: "Cluster-wide BGP settings and peers"}
	cmd.AddCommand(&cobra.Command{
		Use:   "default-node-as [AS]",
		Short: "Show or set the AS number of nodes that have none of their own (default 64512)",
		Args:  cobra.MaximumNArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 1 {
				return c.SetDefaultAS(cmd.Context(), args[0])
			}
			cfg, err := c.BGPConfig(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Println(cfg.DefaultASNumber)
			return nil
		}),
	})
	cmd.AddCommand(&cobra.Command{
		Use:       "node-mesh [on|off]",
		Short:     "Show or set the full BGP mesh between nodes",
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if len(args) == 1 {
				switch args[0] {
				case "on", "off":
					return c.SetNodeMesh(cmd.Context(), args[0] == "on")
				}
				return fmt.Errorf("bad node-mesh value %q: use on or off", args[0])
			}
			cfg, err := c.BGPConfig(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Println(map[bool]string{true: "on", false: "off"}[cfg.NodeMesh])
			return nil
		}),
	})
	cmd.AddCommand(peerCmd(func(*cobra.Command, *client.Client) (string, error) { return "", nil }))
	return cmd
}

// peerCmd serves both `bgp peer` (global) and `node bgp peer` (this node).
func peerCmd(nodeOf func(*cobra.Command, *client.Client) (string, error)) *cobra.Command {
	cmd := &cobra.Command{Use: "peer", Short: "Manage BGP peers"}
	var maxPrefixes int
	add := &cobra.Command{
		Use:   "add IP as AS [--max-prefixes N]",
		Short: "Add a BGP peer",
		Long: fmt.Sprintf(`Add a BGP peer. A peer that sends more than --max-prefixes prefixes of one
address family has its session reset (default %d); calicoctl status says so.`, api.DefaultMaxPrefixes),
		Args: peerArgs,
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if cmd.Flags().Changed("max-prefixes") && (maxPrefixes < 1 || maxPrefixes > api.MaxMaxPrefixes) {
				return fmt.Errorf("--max-prefixes %d: must be 1 to %d", maxPrefixes, api.MaxMaxPrefixes)
			}
			node, err := nodeOf(cmd, c)
			if err != nil {
				return err
			}
			return c.AddPeer(cmd.Context(), node, args[0], args[2], maxPrefixes)
		}),
	}
	add.Flags().IntVar(&maxPrefixes, "max-prefixes", 0, fmt.Sprintf("reset the session when the peer sends more prefixes than this per address family (default %d)", api.DefaultMaxPrefixes))
	cmd.AddCommand(add)
	cmd.AddCommand(&cobra.Command{
		Use:   "remove IP",
		Short: "Remove a BGP peer",
		Args:  exactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			node, err := nodeOf(cmd, c)
			if err != nil {
				return err
			}
			return c.RemovePeer(cmd.Context(), node, args[0])
		}),
	})
	var family func() int
	show := &cobra.Command{
		Use:   "show",
		Short: "List BGP peers",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			node, err := nodeOf(cmd, c)
			if err != nil {
				return err
			}
			peers, err := c.Peers(cmd.Context(), node, family())
			if err != nil {
				return err
			}
			if peers == nil {
				peers = []api.BGPPeer{}
			}
			return output.Print(os.Stdout, f, peers, func() *output.Table {
				t := &output.Table{Header: []string{"peer address", "as number", "max prefixes"}}
				for _, p := range peers {
					limit := strconv.Itoa(p.EffectiveMaxPrefixes())
					if p.MaxPrefixes == 0 {
						limit += " (default)"
					}
					t.Add(p.IP, strconv.FormatUint(uint64(p.ASNumber), 10), limit)
				}
				return t
			})
		}),
	}
	family = addFamilyFlags(show, "peers")
	addOutputFlag(show)
	cmd.AddCommand(show)
	return cmd
}

func peerArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 3 || args[1] != "as" {
		return fmt.Errorf("usage: %s IP as AS (e.g. 10.0.0.254 as 65000)", cmd.CommandPath())
	}
	return nil
}
