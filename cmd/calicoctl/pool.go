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

func poolCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pool", Short: "Manage IP pools (the ranges workloads take addresses from)"}

	var ipip, vxlan, nat, disabled bool
	var ipipMode, vxlanMode string
	var blockSize int
	add := &cobra.Command{
		Use:   "add CIDR [CIDR...]",
		Short: "Add pools, or change the options of existing ones",
		Example: `  calicoctl pool add 192.168.100.0/24 --ipip --nat-outgoing
  calicoctl pool add 192.168.100.0/24 --nat-outgoing     # re-adding overrides the options
  calicoctl pool add 10.64.0.0/16 --vxlan-mode=cross-subnet
  calicoctl pool add fd80:24e2:f998:72d6::/64`,
		Args: cobra.MinimumNArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			o := client.PoolOptions{NATOutgoing: nat, BlockSize: blockSize, Disabled: disabled}
			var err error
			if o.IPIPMode, err = modeFlag(ipip, ipipMode, "--ipip-mode"); err != nil {
				return err
			}
			if o.VXLANMode, err = modeFlag(vxlan, vxlanMode, "--vxlan-mode"); err != nil {
				return err
			}
			pools, err := c.AddPools(cmd.Context(), args, o)
			if err != nil {
				return err
			}
			for _, p := range pools {
				fmt.Printf("Pool %s: ipip %s, vxlan %s, nat-outgoing %v\n", p.CIDR, p.IPIPMode, p.VXLANMode, p.NATOutgoing)
			}
			return nil
		}),
	}
	add.Flags().BoolVar(&ipip, "ipip", false, "encapsulate cross-host traffic in IP-in-IP (same as --ipip-mode=always)")
	add.Flags().BoolVar(&vxlan, "vxlan", false, "encapsulate cross-host traffic in VXLAN (same as --vxlan-mode=always)")
	add.Flags().StringVar(&ipipMode, "ipip-mode", "", "always, cross-subnet or never")
	add.Flags().StringVar(&vxlanMode, "vxlan-mode", "", "always, cross-subnet or never")
	add.Flags().BoolVar(&nat, "nat-outgoing", false, "masquerade traffic leaving the pools")
	add.Flags().IntVar(&blockSize, "block-size", 0, "prefix length of per-host blocks (default 26 for IPv4, 122 for IPv6)")
	add.Flags().BoolVar(&disabled, "disabled", false, "keep the pool but take no new automatic addresses from it")

	var force bool
	remove := &cobra.Command{
		Use:   "remove CIDR",
		Short: "Remove a pool and its empty blocks (refused while its addresses are in use, unless --force)",
		Long: `Remove a pool together with its empty blocks and their host claims. While
addresses of the pool are assigned the removal is refused, naming how many;
with --force the pool goes anyway and the blocks still holding addresses stay
until those addresses are released (ipam check lists them meanwhile). The count
and the removal are one guarded transaction, so an assignment running at the
same moment either lands before the count (and refuses the removal) or fails.`,
		Args: exactArgs(1),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return c.RemovePool(cmd.Context(), args[0], force)
		}),
	}
	remove.Flags().BoolVar(&force, "force", false, "remove even if addresses are in use")

	var family func() int
	show := &cobra.Command{
		Use:   "show",
		Short: "List pools",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			pools, err := c.Pools(cmd.Context(), family())
			if err != nil {
				return err
			}
			if pools == nil {
				pools = []api.Pool{}
			}
			return output.Print(os.Stdout, f, pools, func() *output.Table {
				t := &output.Table{Header: []string{"cidr", "ipip", "vxlan", "nat-outgoing", "block", "disabled"}}
				for _, p := range pools {
					t.Add(p.CIDR, string(p.IPIPMode), string(p.VXLANMode), strconv.FormatBool(p.NATOutgoing), "/"+strconv.Itoa(p.BlockSize), strconv.FormatBool(p.Disabled))
				}
				return t
			})
		}),
	}
	family = addFamilyFlags(show, "pools")
	addOutputFlag(show)
	cmd.AddCommand(add, remove, show)
	return cmd
}

// modeFlag folds the boolean shorthand and the explicit mode into one mode.
func modeFlag(on bool, mode, name string) (api.EncapMode, error) {
	if mode == "" {
		if on {
			return api.EncapAlways, nil
		}
		return api.EncapNever, nil
	}
	m, err := api.ParseEncapMode(mode)
	if err != nil {
		return "", fmt.Errorf("%s: %v", name, err)
	}
	return m, nil
}
