package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/output"
	"github.com/calico-go/calico/internal/resource"
)

const resourceTypes = `Resource types: globalnetworkpolicy (globalnetworkpolicies, gnp),
globalnetworkset (globalnetworksets, gns), profile (profiles; the seed's profiles).`

const fileHelp = `FILE holds one or more projectcalico.org/v3 documents (YAML separated by
"---", or JSON); "-" reads standard input. Every document is checked first:
if one is bad, or one resource cannot be changed as asked, nothing is written.`

// fileCmd is apply, create or replace: the same reading of a file, a
// different rule for what may already exist.
func fileCmd(use, short string, verb client.Verb) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   use + " -f FILE",
		Short: short,
		Long:  short + ".\n\n" + fileHelp,
		Args: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return fmt.Errorf("%s needs -f FILE (or -f - for standard input); usage: %s", cmd.CommandPath(), cmd.UseLine())
			}
			return exactArgs(0)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFile(cmd, verb, file, false)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file of resources, or "-" for standard input`)
	return cmd
}

// runFile reads and checks the whole file before it dials the datastore,
// so a bad file fails at once, datastore or not.
func runFile(cmd *cobra.Command, verb client.Verb, file string, skipMissing bool) error {
	data, err := client.ReadFile(file, cmd.InOrStdin())
	if err != nil {
		return err
	}
	rs, err := client.DecodeFile(file, data)
	if err != nil {
		return err
	}
	c, err := connect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	results, err := c.ChangeResources(cmd.Context(), verb, rs, skipMissing)
	if err != nil {
		return err
	}
	for _, r := range results {
		fmt.Fprintf(cmd.OutOrStdout(), "%s %q %s\n", r.Kind, r.Name, r.Outcome)
	}
	return nil
}

func deleteCmd() *cobra.Command {
	var file string
	var skipMissing bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | TYPE NAME)",
		Short: "Delete the resources of a file, or one resource by type and name",
		Long: "Delete the resources of a file, or one resource by type and name.\n\n" + fileHelp +
			"\nOnly the kinds and names in the file count.\n\n" + resourceTypes,
		// Arguments are checked before the datastore is dialled.
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case file != "" && len(args) != 0:
				return fmt.Errorf("give either -f FILE or TYPE NAME, not both; usage: %s", cmd.UseLine())
			case file == "" && len(args) != 2:
				return fmt.Errorf("%s takes -f FILE or TYPE NAME; usage: %s", cmd.CommandPath(), cmd.UseLine())
			case file == "":
				_, err := client.ParseKind(args[0])
				return err
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				return runFile(cmd, client.Delete, file, skipMissing)
			}
			return deleteByName(cmd, args[0], args[1])
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file of resources, or "-" for standard input`)
	cmd.Flags().BoolVar(&skipMissing, "skip-not-exists", false, "with -f: pass over resources that do not exist instead of refusing the file")
	return cmd
}

func deleteByName(cmd *cobra.Command, typ, name string) error {
	c, err := connect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	kind, _ := client.ParseKind(typ) // checked by Args
	if kind == client.KindProfile {
		err = c.RemoveProfile(cmd.Context(), name, false)
	} else {
		err = c.DeleteResource(cmd.Context(), kind, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s %q %s\n", kind, name, client.Deleted)
	return nil
}

func getCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "List resources of a type, or show one",
		Long: `List resources of a type, or show one. -o yaml prints documents, -o json
one object or a list ("kind": "GlobalNetworkPolicyList") for several; apply,
create and replace read either back unchanged.

` + resourceTypes,
		// Arguments are checked before the datastore is dialled.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("%s takes TYPE [NAME], got %d argument(s); usage: %s", cmd.CommandPath(), len(args), cmd.UseLine())
			}
			if _, err := client.ParseKind(args[0]); err != nil {
				return err
			}
			_, err := format()
			return err
		},
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kind, _ := client.ParseKind(args[0])
			f, _ := format()
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			if kind == client.KindProfile {
				return getProfiles(cmd, c, f, name)
			}
			rs, err := c.GetResources(cmd.Context(), kind, name)
			if err != nil {
				return err
			}
			return printResources(cmd.OutOrStdout(), f, kind, rs, name != "")
		}),
	}
	addOutputFlag(cmd)
	return cmd
}

// printResources prints v3 resources: YAML documents separated by "---"
// (so the output applies as it is), JSON as one object or a list, or a
// table.
func printResources(w io.Writer, f output.Format, kind string, rs []resource.Resource, one bool) error {
	switch f {
	case "yaml":
		for i, r := range rs {
			b, err := yaml.Marshal(r)
			if err != nil {
				return err
			}
			if i > 0 {
				fmt.Fprintln(w, "---")
			}
			w.Write(b)
		}
		return nil
	case "json":
		var v any = rs
		if one {
			v = rs[0]
		} else {
			if rs == nil {
				rs = []resource.Resource{}
			}
			v = struct {
				resource.TypeMeta
				Items []resource.Resource `json:"items"`
			}{resource.TypeMeta{APIVersion: resource.APIVersion, Kind: kind + "List"}, rs}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	}
	return resourceTable(kind, rs, f == "wide").Write(w)
}

func resourceTable(kind string, rs []resource.Resource, wide bool) *output.Table {
	t := &output.Table{}
	switch kind {
	case resource.KindGlobalNetworkPolicy:
		t.Header = []string{"name", "order", "selector"}
		if wide {
			t.Header = append(t.Header, "types", "ingress", "egress")
		}
		for _, r := range rs {
			p := r.(*resource.GlobalNetworkPolicy)
			order, sel := "", p.Spec.Selector
			if p.Spec.Order != nil {
				order = strconv.FormatFloat(*p.Spec.Order, 'g', -1, 64)
			}
			if sel == "" {
				sel = "all()"
			}
			row := []string{p.Metadata.Name, order, sel}
			if wide {
				in, eg := p.Spec.PolicyTypes()
				var types []string
				if in {
					types = append(types, resource.TypeIngress)
				}
				if eg {
					types = append(types, resource.TypeEgress)
				}
				row = append(row, strings.Join(types, ","), strconv.Itoa(len(p.Spec.Ingress)), strconv.Itoa(len(p.Spec.Egress)))
			}
			t.Add(row...)
		}
	case resource.KindGlobalNetworkSet:
		t.Header = []string{"name", "nets"}
		if wide {
			t.Header = append(t.Header, "labels")
		}
		for _, r := range rs {
			s := r.(*resource.GlobalNetworkSet)
			row := []string{s.Metadata.Name, strings.Join(s.Spec.Nets, ",")}
			if wide {
				row = append(row, formatLabels(s.Metadata.Labels))
			}
			t.Add(row...)
		}
	}
	return t
}

// getProfiles lists the seed's profiles (or one), as `profile show` does.
func getProfiles(cmd *cobra.Command, c *client.Client, f output.Format, name string) error {
	var profiles []api.Profile
	if name == "" {
		var err error
		if profiles, err = c.Profiles(cmd.Context()); err != nil {
			return err
		}
	} else {
		p, err := c.Profile(cmd.Context(), name)
		if err != nil {
			return err
		}
		profiles = []api.Profile{p}
	}
	return printProfiles(cmd.OutOrStdout(), f, profiles, nil, false)
}

// formatLabels is k=v,k=v in key order.
func formatLabels(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}
