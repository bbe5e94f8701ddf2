// Command calicoctl configures the network: pools, profiles, BGP, nodes and
// workloads. It validates input, writes the datastore, and leaves the kernel
// to calico-node (except a workload's own veth, which it wires on this host).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/options"
	"github.com/calico-go/calico/internal/output"
)

var (
	etcdEndpoints string
	outputFormat  string
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := rootCmd()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		msg := err.Error()
		fmt.Fprintln(os.Stderr, "error: "+strings.TrimSpace(msg))
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "calicoctl",
		Short: "Configure a pure layer-3 container network",
		Long: `calicoctl configures a Calico-style network: IP pools, security profiles,
BGP, the node agent on each host, and the workloads attached to it.

The datastore is etcd: --etcd-endpoints, else ETCD_ENDPOINTS (comma-separated
URLs), else ETCD_AUTHORITY (host:port), else 127.0.0.1:2379. TLS comes from
ETCD_CA_CERT_FILE, ETCD_CERT_FILE and ETCD_KEY_FILE. "This host" is
CALICO_NODENAME, else the node whose IP is on this host, else the host name.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&etcdEndpoints, "etcd-endpoints", "", options.EtcdEndpointsHelp)
	// TLS flags set the same variables the environment can, so one code path reads them.
	for _, f := range []struct{ name, env, help string }{
		{"etcd-ca-cert-file", "ETCD_CA_CERT_FILE", "CA certificate that signed etcd's certificate"},
		{"etcd-cert-file", "ETCD_CERT_FILE", "client certificate for etcd"},
		{"etcd-key-file", "ETCD_KEY_FILE", "client key for etcd"},
	} {
		root.PersistentFlags().Var(envFlag(f.env), f.name, f.help+" (default: $"+f.env+")")
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%v; see `%s --help`", err, c.CommandPath())
	})
	root.AddCommand(datastoreCmd(), poolCmd(), profileCmd(), bgpCmd(), nodeCmd(), containerCmd(),
		endpointCmd(), statusCmd(), ipamCmd(), demoCmd(), versionCmd(), encryptionCmd(), uiCmd(), flowsCmd(), whyCmd(),
		fileCmd("apply", "Create or update the resources of a file (unchanged ones are left alone)", client.Apply),
		fileCmd("create", "Create the resources of a file; refused if any exists", client.Create),
		fileCmd("replace", "Replace the resources of a file; refused if any does not exist", client.Replace),
		deleteCmd(), getCmd())
	return root
}

// envFlag is a flag whose value is stored in an environment variable.
type envFlag string

func (e envFlag) String() string     { return os.Getenv(string(e)) }
func (e envFlag) Set(v string) error { return os.Setenv(string(e), v) }
func (e envFlag) Type() string       { return "file" }

// connect opens the datastore for a command.
func connect(cmd *cobra.Command) (*client.Client, error) {
	return client.Connect(cmd.Context(), etcdEndpoints)
}

// withClient runs fn with a connected client and closes it after.
func withClient(fn func(cmd *cobra.Command, c *client.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := connect(cmd)
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd, c, args)
	}
}

func addOutputFlag(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&outputFormat, "output", "o", "table", "output format: table, wide, json or yaml")
}

// addFamilyFlags adds --ipv4 and --ipv6 to a list command and returns the
// family they select: 4, 6, or 0 for both (neither flag, or both).
func addFamilyFlags(cmd *cobra.Command, what string) func() int {
	var v4, v6 bool
	cmd.Flags().BoolVar(&v4, "ipv4", false, "IPv4 "+what+" only")
	cmd.Flags().BoolVar(&v6, "ipv6", false, "IPv6 "+what+" only")
	return func() int {
		switch {
		case v4 && !v6:
			return 4
		case v6 && !v4:
			return 6
		}
		return 0
	}
}

func format() (output.Format, error) { return output.Parse(outputFormat) }

// thisNode resolves "this host" for commands that act locally.
func thisNode(cmd *cobra.Command, c *client.Client) (string, error) {
	return c.ThisNode(cmd.Context())
}

// exactArgs is cobra.ExactArgs with a message that names the usage.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %d argument(s), got %d; usage: %s", cmd.CommandPath(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Println("calicoctl (calico-go) " + version)
		},
	}
}

const version = "0.1.0"
