package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/output"
	"github.com/calico-go/calico/internal/rules"
)

const profileUsage = `  calicoctl profile add NAME
  calicoctl profile remove NAME [--force]
  calicoctl profile show [--detailed] [-o table|json|yaml]
  calicoctl profile NAME tag (add|remove) TAG
  calicoctl profile NAME tag show
  calicoctl profile NAME rule add (inbound|outbound) [--at=N] RULE
  calicoctl profile NAME rule remove (inbound|outbound) (--at=N | RULE)
  calicoctl profile NAME rule show
  calicoctl profile NAME rule json
  calicoctl profile NAME rule update < rules.json

RULE: (allow|deny) [(tcp|udp) | icmp [type N [code M]] | icmpv6 [type N [code M]]]
      [from [ports P] [tag T] [cidr C]] [to [ports P] [tag T] [cidr C]]
e.g.  calicoctl profile PROF_1 rule add inbound allow tcp from tag WEB to ports 80,443`

// profileCmd dispatches by hand because the profile name sits between
// "profile" and its verb, which cobra's fixed subcommands cannot express.
func profileCmd() *cobra.Command {
	var detailed, force bool
	cmd := &cobra.Command{
		Use:                "profile",
		Short:              "Manage security profiles (tags and inbound/outbound rules)",
		Long:               "Manage security profiles.\n\nUsage:\n" + profileUsage,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			var rest []string
			detailed, force = false, false
			args, err := takeGlobalFlags(args)
			if err != nil {
				return err
			}
			for _, a := range args {
				switch a {
				case "-h", "--help":
					return cmd.Help()
				case "--detailed":
					detailed = true
				case "--force":
					force = true
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
			return runProfile(cmd, c, rest, detailed, force)
		},
	}
	return cmd
}

func runProfile(cmd *cobra.Command, c *client.Client, args []string, detailed, force bool) error {
	ctx := cmd.Context()
	usage := func() error {
		return fmt.Errorf("unrecognised profile command %q; usage:\n%s", strings.Join(args, " "), profileUsage)
	}
	switch args[0] {
	case "add":
		if len(args) != 2 {
			return usage()
		}
		if err := c.AddProfile(ctx, args[1], false); err != nil {
			return err
		}
		fmt.Printf("Created profile %s\n", args[1])
		return nil
	case "remove":
		if len(args) != 2 {
			return usage()
		}
		if err := c.RemoveProfile(ctx, args[1], force); err != nil {
			return err
		}
		fmt.Printf("Removed profile %s\n", args[1])
		return nil
	case "show":
		if len(args) != 1 {
			return usage()
		}
		return showProfiles(cmd, c, detailed)
	}
	if len(args) < 3 {
		return usage()
	}
	name, what, verb := args[0], args[1], args[2]
	switch what + " " + verb {
	case "tag add", "tag remove":
		if len(args) != 4 {
			return usage()
		}
		if verb == "add" {
			return c.AddTag(ctx, name, args[3])
		}
		return c.RemoveTag(ctx, name, args[3])
	case "tag show":
		p, err := c.Profile(ctx, name)
		if err != nil {
			return err
		}
		for _, t := range p.Tags {
			fmt.Println(t)
		}
		return nil
	case "rule add":
		dir, at, r, err := rules.ParseCommand(args[3:])
		if err != nil {
			return err
		}
		return c.AddRule(ctx, name, dir, at, r)
	case "rule remove":
		return removeRule(cmd, c, name, args[3:])
	case "rule show":
		p, err := c.Profile(ctx, name)
		if err != nil {
			return err
		}
		printRules(p)
		return nil
	case "rule json":
		p, err := c.Profile(ctx, name)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(client.RulesJSON{Inbound: nonNil(p.Inbound), Outbound: nonNil(p.Outbound)})
	case "rule update":
		doc, err := io.ReadAll(os.Stdin)
		if err != nil {
			return err
		}
		return c.UpdateRules(ctx, name, doc)
	}
	return usage()
}

func nonNil(r []api.Rule) []api.Rule {
	if r == nil {
		return []api.Rule{}
	}
	return r
}

func removeRule(cmd *cobra.Command, c *client.Client, name string, args []string) error {
	if len(args) < 2 || (args[0] != rules.Inbound && args[0] != rules.Outbound) {
		return fmt.Errorf("usage: calicoctl profile %s rule remove (inbound|outbound) (--at=N | RULE)", name)
	}
	dir := args[0]
	if strings.HasPrefix(args[1], "--at") {
		_, at, _, err := rules.ParseCommand(append(append([]string{dir}, args[1:]...), "allow"))
		if err != nil || at == 0 {
			return fmt.Errorf("bad %s: want --at=N with N a rule number from `calicoctl profile %s rule show`", args[1], name)
		}
		return c.RemoveRule(cmd.Context(), name, dir, at, nil)
	}
	r, err := rules.Parse(args[1:])
	if err != nil {
		return err
	}
	return c.RemoveRule(cmd.Context(), name, dir, 0, &r)
}

func printRules(p api.Profile) {
	fmt.Println("Inbound rules:")
	for i, r := range p.Inbound {
		fmt.Printf("  %2d %s\n", i+1, rules.Format(r))
	}
	fmt.Println("Outbound rules:")
	for i, r := range p.Outbound {
		fmt.Printf("  %2d %s\n", i+1, rules.Format(r))
	}
}

func showProfiles(cmd *cobra.Command, c *client.Client, detailed bool) error {
	f, err := format()
	if err != nil {
		return err
	}
	profiles, err := c.Profiles(cmd.Context())
	if err != nil {
		return err
	}
	if profiles == nil {
		profiles = []api.Profile{}
	}
	var eps []api.Endpoint
	if detailed {
		if eps, err = c.Endpoints(cmd.Context(), ""); err != nil {
			return err
		}
	}
	return printProfiles(os.Stdout, f, profiles, eps, detailed)
}

// printProfiles prints profiles as `profile show` and `get profiles` do;
// detailed adds the endpoints using each, from eps.
func printProfiles(w io.Writer, f output.Format, profiles []api.Profile, eps []api.Endpoint, detailed bool) error {
	return output.Print(w, f, profiles, func() *output.Table {
		t := &output.Table{Header: []string{"name", "tags", "inbound", "outbound"}}
		if detailed {
			t.Header = append(t.Header, "endpoints")
		}
		for _, p := range profiles {
			row := []string{p.Name, strings.Join(p.Tags, ","), fmt.Sprint(len(p.Inbound)), fmt.Sprint(len(p.Outbound))}
			if detailed {
				var members []string
				for _, ep := range eps {
					for _, n := range ep.Profiles {
						if n == p.Name {
							members = append(members, ep.Node+"/"+ep.Workload)
						}
					}
				}
				row = append(row, strings.Join(members, ","))
			}
			t.Add(row...)
		}
		return t
	})
}
