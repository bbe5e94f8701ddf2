package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/ui"
)

func uiCmd() *cobra.Command {
	var listen string
	var allowHosts []string
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve a live, read-only web view of hosts, pools, workloads, profiles and who can reach whom",
		Long: `Serve a read-only web page of the network: hosts with their agents' health
and BGP sessions, pools and blocks, workloads with addresses, labels and
profiles, and a matrix of who can reach whom (ICMP, and TCP to port 80 or the
page's ?port=N), each cell the verdict of calicoctl why and a link to its
explanation. It follows the datastore and updates open pages as things change.

It listens on 127.0.0.1:9099 by default. The page has no login: anyone who
can reach --listen sees the network's layout, so keep it on a loopback address
(reach it through an SSH tunnel) unless the network is trusted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Listen first: a bad or busy address fails at once, not
			// after a datastore connection.
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("cannot listen on %s: %v; choose another ADDR:PORT with --listen", listen, err)
			}
			defer ln.Close()
			c, err := connect(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
				fmt.Fprintf(os.Stderr, "warning: %s is not a loopback address: anyone who reaches it sees the network's layout\n", ln.Addr())
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			s := ui.New(c.DS, ui.Options{AllowHosts: allowHosts, Log: log})
			fmt.Printf("Serving the network view on http://%s/ (read-only; Ctrl-C stops)\n", ln.Addr())
			return ui.Serve(cmd.Context(), ln, s)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:9099", "ADDR:PORT to serve the page on")
	cmd.Flags().StringSliceVar(&allowHosts, "allow-host", nil, "a host name the page may be opened by, besides IP addresses and localhost (repeatable)")
	return cmd
}
