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

// nodeFlow is one denied flow with the node that saw it (the -o json form).
type nodeFlow struct {
	Node string `json:"node"`
	api.DeniedFlow
}

func flowsCmd() *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Recent packets workload policy denied, per workload, with the profile rule that denied them",
		Long: "Each node reports the kinds of packets its policy dropped lately (a few per workload, newest first):\n" +
			"workload, direction, addresses, protocol and port, and the profile rule that denied them, or that no rule allowed them.",
		Args: exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			var statuses []api.NodeStatus
			if node != "" {
				st, err := c.Status(cmd.Context(), node)
				if err != nil {
					return err
				}
				statuses = append(statuses, st)
			} else {
				views, err := c.Nodes(cmd.Context())
				if err != nil {
					return err
				}
				for _, v := range views {
					if v.Status != nil {
						statuses = append(statuses, *v.Status)
					}
				}
			}
			flows := []nodeFlow{}
			for _, st := range statuses {
				for _, fl := range st.Flows {
					flows = append(flows, nodeFlow{st.Node, fl})
				}
			}
			return output.Print(os.Stdout, f, flows, func() *output.Table {
				t := &output.Table{Header: []string{"node", "workload", "direction", "source", "destination", "protocol", "port", "packets", "last seen", "denied by"}}
				for _, fl := range flows {
					port := "-"
					if fl.Port != 0 || fl.Protocol == "icmp" || fl.Protocol == "icmpv6" {
						port = strconv.Itoa(fl.Port)
					}
					t.Add(fl.Node, fl.Workload, fl.Direction, fl.Source, fl.Destination, fl.Protocol, port,
						fmt.Sprint(fl.Packets), fl.LastSeen, fl.DeniedBy)
				}
				return t
			})
		}),
	}
	cmd.Flags().StringVar(&node, "node", "", "only this node's (default: every node's)")
	addOutputFlag(cmd)
	return cmd
}
