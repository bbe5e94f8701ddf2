package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/output"
)

func encryptionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "encryption",
		Short: "Encrypt workload traffic between hosts with WireGuard (on, off, show, rotate)",
	}
	var allowPlain bool
	on := &cobra.Command{
		Use:   "on",
		Short: "Encrypt workload traffic between hosts (each host makes its key and publishes the public half)",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.UpdateEncryption(cmd.Context(), func(e *api.EncryptionConfig) { e.Enabled, e.AllowUnencrypted = true, allowPlain })
			if err != nil {
				return err
			}
			fmt.Println("Encryption is on: workload traffic between hosts goes through WireGuard (UDP 51820)")
			return nil
		}),
	}
	on.Flags().BoolVar(&allowPlain, "allow-unencrypted", false, "reach hosts that have published no WireGuard key in the clear (default: they are unreachable)")
	off := &cobra.Command{
		Use:   "off",
		Short: "Route workload traffic between hosts in the clear again",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.UpdateEncryption(cmd.Context(), func(e *api.EncryptionConfig) { e.Enabled, e.AllowUnencrypted = false, false })
			if err != nil {
				return err
			}
			fmt.Println("Encryption is off")
			return nil
		}),
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make every host generate a new WireGuard key and publish it",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			cfg, err := c.UpdateEncryption(cmd.Context(), func(e *api.EncryptionConfig) { e.Rotation++ })
			if err != nil {
				return err
			}
			fmt.Printf("Key rotation %d requested: each host makes a new key and publishes it\n", cfg.Rotation)
			return nil
		}),
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the setting and each node's key, mode and peers",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			cfg, err := c.Encryption(cmd.Context())
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			f, err := format()
			if err != nil {
				return err
			}
			if f == "json" || f == "yaml" {
				return output.Print(os.Stdout, f, map[string]any{"encryption": cfg, "nodes": nodes}, nil)
			}
			state := "off"
			if cfg.Enabled {
				state = "on"
				if cfg.AllowUnencrypted {
					state += " (hosts without a key are reached unencrypted)"
				}
			}
			fmt.Printf("Encryption: %s (key rotation %d)\n\n", state, cfg.Rotation)
			t := &output.Table{Header: []string{"node", "public key", "mode", "peers with a handshake"}}
			for _, n := range nodes {
				mode, peers := "-", "-"
				if n.Status != nil && n.Status.WireGuard != nil {
					wg := n.Status.WireGuard
					mode = wg.Mode
					ok := 0
					for _, p := range wg.Peers {
						if p.LastHandshake != "" {
							ok++
						}
					}
					peers = fmt.Sprintf("%d of %d", ok, len(wg.Peers))
				}
				t.Add(n.Name, orDash(n.WireGuardPublicKey), mode, peers)
			}
			return t.Write(os.Stdout)
		}),
	}
	addOutputFlag(show)
	cmd.AddCommand(on, off, show, rotate)
	return cmd
}

// printWireGuard adds the WireGuard lines to `calicoctl status`.
func printWireGuard(wg *api.WireGuardStatus) {
	if wg == nil {
		return
	}
	fmt.Printf("WireGuard: %s on %s, public key %s\n", wg.Mode, wg.Device, wg.PublicKey)
	t := &output.Table{Header: []string{"peer", "endpoint", "allowed IPs", "last handshake"}}
	for _, p := range wg.Peers {
		age := "never"
		if ts, err := time.Parse(time.RFC3339, p.LastHandshake); err == nil {
			age = time.Since(ts).Round(time.Second).String() + " ago"
		}
		t.Add(orDash(p.Node), p.Endpoint, fmt.Sprint(p.AllowedIPs), age)
	}
	t.Write(os.Stdout)
}
