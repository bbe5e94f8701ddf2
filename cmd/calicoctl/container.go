package main

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/containerref"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/output"
)

const containerUsage = `  calicoctl container add NAME (IP|auto|auto6) [IP...] [--netns PATH] [--interface eth0] [--profile P[,P...]] [--label KEY=VALUE]...
  calicoctl container remove NAME
  calicoctl container NAME ip (add|remove) IP
  calicoctl container NAME profile (append|remove|set) PROFILE [PROFILE...]
  calicoctl container NAME profile show
  calicoctl container NAME label add KEY=VALUE [KEY=VALUE...]
  calicoctl container NAME label remove KEY [KEY...]
  calicoctl container NAME label show [-o table|json|yaml]

NAME is a Docker container name or id, or with --netns PATH any workload in
that network namespace, named NAME on this host. Label keys under
projectcalico.org/ and profile.projectcalico.org/ are calico's own (node,
orchestrator, workload, profiles): label show lists them, marked implicit.`

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
			var labels []string // --label is repeatable
			values := map[string]*string{"--netns": &netns, "--interface": &iface, "--profile": &profiles}
			for i := 0; i < len(args); i++ {
				a := args[i]
				name, value, hasValue := strings.Cut(a, "=")
				target, isValueFlag := values[name]
				isLabel := name == "--label"
				switch {
				case a == "-h" || a == "--help":
					return cmd.Help()
				case isValueFlag || isLabel:
					if !hasValue {
						if i+1 >= len(args) {
							return fmt.Errorf("%s needs a value", a)
						}
						i++
						value = args[i]
					}
					if isLabel {
						labels = append(labels, value)
					} else {
						*target = value
					}
				case strings.HasPrefix(a, "-"):
					return fmt.Errorf("unknown flag %s; usage:\n%s", a, containerUsage)
				default:
					rest = append(rest, a)
				}
			}
			if len(rest) == 0 {
				return cmd.Help()
			}
			if len(labels) > 0 && rest[0] != "add" {
				return fmt.Errorf("--label belongs to `container add`; to label an existing workload use `calicoctl container NAME label add KEY=VALUE`")
			}
			labelMap, err := client.ParseLabels(labels)
			if err != nil {
				return fmt.Errorf("--label: %w", err)
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
			return runContainer(cmd, c, rest, netns, iface, profileList, labelMap)
		},
	}
}

func runContainer(cmd *cobra.Command, c *client.Client, args []string, netns, iface string, profiles []string, labels map[string]string) error {
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
			var skipped []error
			if req, skipped, err = containerref.DockerRequest(ctx, c, node, args[1], args[2:], profiles, iface); err != nil {
				return err
			}
			for _, err := range skipped {
				fmt.Fprintf(os.Stderr, "warning: Docker label skipped: %v\n", err)
			}
		}
		// --label wins over the container's Docker labels.
		for k, v := range labels {
			if req.Labels == nil {
				req.Labels = map[string]string{}
			}
			req.Labels[k] = v
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
	case "label add":
		if len(args) < 4 {
			return usage
		}
		set, err := client.ParseLabels(args[3:])
		if err != nil {
			return err
		}
		changes, err := c.SetLabels(ctx, node, name, set)
		if err != nil {
			return err
		}
		for _, ch := range changes {
			if ch.Old != nil && *ch.Old != ch.Value {
				fmt.Printf("Label %s=%s set on %s (was %q)\n", ch.Key, ch.Value, args[0], *ch.Old)
			} else {
				fmt.Printf("Label %s=%s set on %s\n", ch.Key, ch.Value, args[0])
			}
		}
		return nil
	case "label remove":
		if len(args) < 4 {
			return usage
		}
		if err := c.RemoveLabels(ctx, node, name, args[3:]); err != nil {
			return err
		}
		fmt.Printf("Label(s) removed from %s: %s\n", args[0], strings.Join(args[3:], ","))
		return nil
	case "label show":
		if len(args) != 3 {
			return usage
		}
		f, err := format()
		if err != nil {
			return err
		}
		ep, _, err := c.Endpoint(ctx, node, name)
		if err != nil {
			return err
		}
		labels := endpointLabels(ep)
		return output.Print(os.Stdout, f, labels, func() *output.Table {
			t := &output.Table{Header: []string{"key", "value", "implicit"}}
			for _, l := range labels {
				mark := ""
				if l.Implicit {
					mark = "yes"
				}
				t.Add(l.Key, l.Value, mark)
			}
			return t
		})
	}
	return usage
}

// shownLabel is one row of `label show`.
type shownLabel struct {
	Key      string `json:"key"`
	Value    string `json:"value"`
	Implicit bool   `json:"implicit"`
}

// endpointLabels are the labels selectors see for ep: its own first, then
// the implicit ones, each by key.
func endpointLabels(ep api.Endpoint) []shownLabel {
	eff := ep.EffectiveLabels()
	out := make([]shownLabel, 0, len(eff))
	for _, k := range slices.Sorted(maps.Keys(eff)) {
		out = append(out, shownLabel{Key: k, Value: eff[k], Implicit: api.IsImplicitLabel(k)})
	}
	slices.SortStableFunc(out, func(a, b shownLabel) int {
		switch {
		case a.Implicit == b.Implicit:
			return 0
		case a.Implicit:
			return 1
		}
		return -1
	})
	return out
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
				// CONTAINER is the Docker container as users know it: a
				// libnetwork workload's own name is the engine's endpoint id.
				t := &output.Table{Header: []string{"host", "workload", "container", "interface", "addresses", "profiles"}}
				if detailed {
					t.Header = append(t.Header, "mac", "orchestrator", "netns", "container id")
				}
				for _, ep := range eps {
					id, ctr := ep.DockerContainer()
					row := []string{ep.Node, ep.Workload, ctr, ep.InterfaceName, strings.Join(append(append([]string{}, ep.IPv4Nets...), ep.IPv6Nets...), ","), strings.Join(ep.Profiles, ",")}
					if detailed {
						row = append(row, ep.MAC, ep.Orchestrator, ep.NetnsPath, shortID(id))
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

// shortID is a container id as Docker's own CLI shows it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
