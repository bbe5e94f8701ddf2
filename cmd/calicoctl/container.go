package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/containerref"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/output"
)

const containerUsage = `  calicoctl container add NAME (IP|auto|auto6) [IP...] [--netns PATH] [--interface eth0] [--profile P[,P...]]
  calicoctl container remove NAME
  calicoctl container NAME ip (add|remove) IP
  calicoctl container NAME profile (append|remove|set) PROFILE [PROFILE...]
  calicoctl container NAME profile show

NAME is a Docker container name or id, or with --netns PATH any workload in
that network namespace, named NAME on this host.`

// containerCmd dispatches by hand: the container name precedes its verb.
func containerCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "container",
		Short:              "Attach workloads to the network and manage their addresses and profiles",
		Long:               "Attach workloads to the network.\n\nUsage:\n" + containerUsage,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			var netns, iface string
			var rest []string
			args, err := takeGlobalFlags(args)
			if err != nil {
				return err
			}
			var profiles string
			values := map[string]*string{"--netns": &netns, "--interface": &iface, "--profile": &profiles}
			for i := 0; i < len(args); i++ {
				a := args[i]
				name, value, hasValue := strings.Cut(a, "=")
				target, isValueFlag := values[name]
				switch {
				case a == "-h" || a == "--help":
					return cmd.Help()
				case isValueFlag:
					if !hasValue {
						if i+1 >= len(args) {
							return fmt.Errorf("%s needs a value", a)
						}
						i++
						value = args[i]
					}
					*target = value
				case strings.HasPrefix(a, "-"):
					return fmt.Errorf("unknown flag %s; usage:\n%s", a, containerUsage)
				default:
					rest = append(rest, a)
				}
			}
			if len(rest) == 0 {
				return cmd.Help()
			}
			c, err := connect(cmd)
			if err != nil {
				return err
			}
			defer c.Close()
			var profileList []string
			if profiles != "" {
				profileList = strings.Split(profiles, ",")
			}
			return runContainer(cmd, c, rest, netns, iface, profileList)
		},
	}
}

func runContainer(cmd *cobra.Command, c *client.Client, args []string, netns, iface string, profiles []string) error {
	ctx := cmd.Context()
	usage := fmt.Errorf("unrecognised container command %q; usage:\n%s", strings.Join(args, " "), containerUsage)
	node, err := thisNode(cmd, c)
	if err != nil {
		return err
	}
	switch args[0] {
	case "add":
		if len(args) < 3 {
			return usage
		}
		req := client.WorkloadRequest{Node: node, Name: args[1], IPs: args[2:], NetnsPath: netns, Interface: iface, Orchestrator: api.OrchestratorNetns, Profiles: profiles}
		if netns == "" {
			if req, err = containerref.DockerRequest(ctx, c, node, args[1], args[2:], profiles, iface); err != nil {
				return err
			}
		}
		ep, err := c.AddWorkload(ctx, req)
		if errors.Is(err, datastore.ErrUnreachable) {
			// Its undo could not reach the datastore either: an address it
			// claimed may stay claimed until someone frees it.
			return fmt.Errorf("%v; an address claimed before it stopped answering may stay claimed: `calicoctl ipam check` lists it once the datastore answers", err)
		} else if err != nil {
			return err
		}
		fmt.Printf("IP %s added to %s (interface %s on host %s)\n", strings.Join(append(ep.IPv4Nets, ep.IPv6Nets...), ","), args[1], ep.InterfaceName, node)
		return nil
	case "remove":
		if len(args) != 2 {
			return usage
		}
		// Whatever resolving said, what an interrupted add of that name
		// left is still removed (Docker need not answer for that); only
		// when there is nothing at all does the user see why.
		name, whyNot := workloadName(cmd, c, node, args[1])
		notes, err := c.RemoveWorkload(ctx, node, name)
		for _, n := range notes {
			fmt.Fprintln(os.Stderr, "warning: "+n)
		}
		if err != nil && whyNot != nil && errors.Is(err, datastore.ErrNotFound) {
			return whyNot
		} else if err != nil {
			return err
		}
		fmt.Printf("Removed networking from %s\n", args[1])
		return nil
	}
	if len(args) < 3 {
		return usage
	}
	name, err := workloadName(cmd, c, node, args[0])
	if err != nil {
		return err
	}
	switch args[1] + " " + args[2] {
	case "ip add", "ip remove":
		if len(args) != 4 {
			return usage
		}
		if args[2] == "add" {
			return c.AddWorkloadIP(ctx, node, name, args[3])
		}
		return c.RemoveWorkloadIP(ctx, node, name, args[3])
	case "profile show":
		ep, _, err := c.Endpoint(ctx, node, name)
		if err != nil {
			return err
		}
		for _, p := range ep.Profiles {
			fmt.Println(p)
		}
		return nil
	case "profile append", "profile remove", "profile set":
		if len(args) < 4 && args[2] != "set" {
			return usage
		}
		if err := c.ChangeProfiles(ctx, node, name, client.ProfileOp(args[2]), args[3:]); err != nil {
			return err
		}
		fmt.Printf("Profile(s) %s: %s %s\n", args[2], name, strings.Join(args[3:], ","))
		return nil
	}
	return usage
}

func endpointCmd() *cobra.Command {
	var detailed bool
	var host string
	cmd := &cobra.Command{Use: "endpoint", Short: "Inspect workload endpoints"}
	show := &cobra.Command{
		Use:   "show",
		Short: "List workload endpoints on every host (or --host)",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			eps, err := c.Endpoints(cmd.Context(), host)
			if err != nil {
				return err
			}
			if eps == nil {
				eps = []api.Endpoint{}
			}
			return output.Print(os.Stdout, f, eps, func() *output.Table {
				t := &output.Table{Header: []string{"host", "workload", "interface", "addresses", "profiles"}}
				if detailed {
					t.Header = append(t.Header, "mac", "orchestrator", "netns")
				}
				for _, ep := range eps {
					row := []string{ep.Node, ep.Workload, ep.InterfaceName, strings.Join(append(append([]string{}, ep.IPv4Nets...), ep.IPv6Nets...), ","), strings.Join(ep.Profiles, ",")}
					if detailed {
						row = append(row, ep.MAC, ep.Orchestrator, ep.NetnsPath)
					}
					t.Add(row...)
				}
				return t
			})
		}),
	}
	show.Flags().BoolVar(&detailed, "detailed", false, "show MAC, orchestrator and namespace")
	show.Flags().StringVar(&host, "host", "", "only this host's endpoints")
	addOutputFlag(show)
	cmd.AddCommand(show)
	return cmd
}

// workloadName is the workload on this host that given names (see
// containerref); when that fails, given itself, and why.
func workloadName(cmd *cobra.Command, c *client.Client, node, given string) (string, error) {
	name, err := containerref.Resolve(cmd.Context(), c, func() (containerref.Engine, error) {
		return containerref.OpenEngine()
	}, node, given)
	if err != nil {
		return given, err
	}
	return name, nil
}
