package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-go/calico/internal/client"
	"github.com/calico-go/calico/internal/daemon"
	"github.com/calico-go/calico/internal/docker/libnetwork"
	"github.com/calico-go/calico/internal/options"
	"github.com/calico-go/calico/internal/output"
)

// Where each node keeps its files: per node name, since one machine may run
// several nodes in network namespaces. CALICO_STATE_DIR moves both trees
// (labs use it so runs side by side never share a pid file).
func nodeLogFile(name string) string {
	return filepath.Join(stateDir("/var/log/calico"), name, "calico-node.log")
}

func nodePIDFile(name string) string {
	return filepath.Join(stateDir("/var/run/calico"), name, "calico-node.pid")
}

func stateDir(def string) string {
	if d := os.Getenv("CALICO_STATE_DIR"); d != "" {
		return filepath.Join(d, strings.Split(def, "/")[2], "calico") // run/calico or log/calico
	}
	return def
}

// nodeName is --name, else CALICO_NODENAME, else the host name.
func nodeName(flag string) (string, error) {
	return (&options.Node{Name: flag}).NodeName()
}

func nodeCmd() *cobra.Command {
	o := options.NewNode()
	var timeout time.Duration
	var extra []string
	cmd := &cobra.Command{
		Use:   "node --ip=IP [--name=NAME] [--as=AS] [--ip6=IP6]",
		Short: "Start calico-node on this host, or manage nodes",
		Long: `Start calico-node, the agent that routes, enforces profiles and speaks BGP
for this host. It runs in the background (log in /var/log/calico/NAME/,
pid in /var/run/calico/NAME/) and this command returns once it is ready.
The flags below, except --timeout and --node-arg, are calico-node's own.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.IP == "" {
				return fmt.Errorf("calicoctl node needs --ip=HOST_IP (this host's address on the network between hosts); see `calicoctl node --help`")
			}
			n, err := o.NodeName()
			if err != nil {
				return err
			}
			o.Name = n
			if err := ipOnThisHost(o.IP, "--ip"); err != nil {
				return err
			}
			if o.IP6 != "" {
				if err := ipOnThisHost(o.IP6, "--ip6"); err != nil {
					return err
				}
			}
			// calico-node would refuse the same, after we had started it.
			v, err := o.Validate()
			if err != nil {
				return err
			}
			return startNode(cmd, n, v, append(o.Args(), extra...), timeout)
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the node to be ready")
	cmd.Flags().StringSliceVar(&extra, "node-arg", nil, "extra argument passed to calico-node (repeatable)")
	cmd.AddCommand(nodeStopCmd(), nodeShowCmd(), nodeRemoveCmd(), nodeBGPCmd(), nodeDockerPluginCmd())
	return cmd
}

// ipOnThisHost checks the address is valid and assigned here, since BGP and
// routes built on a wrong address fail in confusing ways later.
func ipOnThisHost(s, flag string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return fmt.Errorf("%s: bad IP address %q", flag, s)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	var here []string
	for _, x := range addrs {
		p, err := netip.ParsePrefix(x.String())
		if err != nil || p.Addr().IsLoopback() || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		if p.Addr() == a {
			return nil
		}
		here = append(here, p.Addr().String())
	}
	return fmt.Errorf("%s: %s is not an address of this host (this host has: %s)", flag, a, strings.Join(here, ", "))
}

// startNode starts calico-node with flags (from options.Node.Args, so
// they include --name and --ip) once the datastore accepts its addresses.
func startNode(cmd *cobra.Command, name string, v options.Values, flags []string, timeout time.Duration) error {
	ctx := cmd.Context()
	c, err := connect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	// A host address inside a pool could be handed to a workload.
	addrs := []netip.Addr{v.IP}
	if v.IP6.IsValid() {
		addrs = append(addrs, v.IP6)
	}
	if err := c.CheckNodeAddrs(ctx, name, addrs...); err != nil {
		return err
	}
	bin, err := siblingBinary("calico-node")
	if err != nil {
		return err
	}
	spec := daemon.Spec{
		Argv:    append([]string{bin}, flags...),
		Env:     []string{"ETCD_ENDPOINTS=" + c.DS.Where(), "CALICO_NODENAME=" + name},
		LogFile: nodeLogFile(name),
		PIDFile: nodePIDFile(name),
	}
	p, err := daemon.Start(spec)
	if err != nil {
		return fmt.Errorf("calico-node %s: %v; stop it with `calicoctl node stop --name=%s`", name, err, name)
	}
	err = daemon.WaitReady(p, spec, timeout, func() error {
		st, err := c.Status(ctx, name)
		if err != nil {
			return err
		}
		if st.PID != p.Pid || !st.Ready {
			return errors.New("not ready yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("calico-node %s did not start: %v", name, err)
	}
	st, _ := c.Status(ctx, name)
	fmt.Printf("Calico node %s is running with pid %d (log %s)\n", name, p.Pid, spec.LogFile)
	for _, pr := range st.Problems {
		fmt.Fprintln(os.Stderr, "warning: "+pr)
	}
	return nil
}

// siblingBinary finds a program next to calicoctl, else on PATH.
func siblingBinary(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		cand := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(cand); err == nil {
			return cand, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("cannot find the %s program next to calicoctl or on PATH; build it with `make build`", name)
}

func nodeStopCmd() *cobra.Command {
	var name, pluginDir string
	var cleanup bool
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop calico-node on this host (routes and policy stay in the kernel, unless --cleanup)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nodeName(name)
			if err != nil {
				return err
			}
			stopped, err := daemon.Stop(nodePIDFile(n), 15*time.Second)
			var reused *daemon.ReusedError
			switch {
			case errors.As(err, &reused):
				err = fmt.Errorf("calico-node %s is not running: %v", n, err)
			case err == nil && !stopped:
				err = fmt.Errorf("calico-node %s is not running (no live pid in %s)", n, nodePIDFile(n))
			case err == nil:
				fmt.Printf("Calico node %s stopped\n", n)
			}
			if cleanup {
				// Also after "not running": what a dead agent left is
				// exactly what --cleanup is for.
				if _, alive := daemon.Running(nodePIDFile(n)); alive {
					return fmt.Errorf("calico-node %s is still running; not removing its kernel state", n)
				}
				return uninstall(cmd.Context(), n, pluginDir)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "node name (default: CALICO_NODENAME, else the host name)")
	cmd.Flags().BoolVar(&cleanup, "cleanup", false, "also remove what the node installed here: table inet calico, its DOCKER-USER rules, its routes, tunnel devices, eBPF programs (and the conntrack setting the fast path changed), plugin sockets")
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", libnetwork.DefaultPluginDir, "where the node served its Docker plugin sockets")
	return cmd
}

// uninstall removes this host's kernel state of calico-node and says what
// went: first the plugin front, which serves the sockets in pluginDir.
func uninstall(ctx context.Context, node, pluginDir string) error {
	f := libnetwork.Front(node, pluginDir)
	if stopped, err := libnetwork.StopFront(f); err != nil {
		return fmt.Errorf("stop the Docker plugin front (pid file %s): %w", f.PIDFile, err)
	} else if stopped {
		fmt.Println("stopped the Docker plugin front")
	}
	removed, err := client.UninstallKernel(ctx, pluginDir)
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	return err
}

func nodeDockerPluginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "docker-plugin DIR",
		Short: "Write a Docker managed plugin (config.json and rootfs with calico-node) to DIR, for `docker plugin create calico DIR`",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			bin, err := siblingBinary("calico-node")
			if err != nil {
				return err
			}
			if err := libnetwork.WritePluginBundle(args[0], bin); err != nil {
				return fmt.Errorf("docker plugin bundle %s: %w", args[0], err)
			}
			fmt.Printf("Docker plugin bundle written to %s; then:\n"+
				"  docker plugin create calico %s\n"+
				"  docker plugin set calico ETCD_ENDPOINTS=http://ETCD:2379 CALICO_IP=HOST_IP\n"+
				"  docker plugin enable calico\n", args[0], args[0])
			return nil
		},
	}
}

func nodeShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show",
		Short: "List nodes, their addresses, AS numbers and state",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := format()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			bgp, err := c.BGPConfig(cmd.Context())
			if err != nil {
				return err
			}
			if nodes == nil {
				nodes = []client.NodeView{}
			}
			return output.Print(os.Stdout, f, nodes, func() *output.Table {
				t := &output.Table{Header: []string{"name", "ipv4", "ipv6", "as", "state", "endpoints", "reported"}}
				for _, n := range nodes {
					as := strconv.FormatUint(uint64(n.ASNumber), 10)
					if n.ASNumber == 0 {
						as = fmt.Sprintf("%d (default)", bgp.DefaultASNumber)
					}
					state, eps, when := "unknown", "-", "-"
					if n.Status != nil {
						state = n.Status.State(time.Now())
						eps = strconv.Itoa(n.Status.Endpoints)
						when = n.Status.Updated
					}
					t.Add(n.Name, n.IPv4, orDash(n.IPv6), as, state, eps, when)
				}
				return t
			})
		}),
	}
	addOutputFlag(cmd)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func nodeRemoveCmd() *cobra.Command {
	var name, pluginDir string
	var force bool
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Remove a stopped node's records and free its address blocks",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			n, err := nodeName(name)
			if err != nil {
				return err
			}
			if _, alive := daemon.Running(nodePIDFile(n)); alive {
				return fmt.Errorf("calico-node %s is still running; stop it first with `calicoctl node stop --name=%s`", n, n)
			}
			if err := c.RemoveNode(cmd.Context(), n, force); err != nil {
				return err
			}
			fmt.Printf("Node %s removed\n", n)
			// The node ran here (its pid file is ours): its kernel state
			// goes too. A node removed from another host keeps whatever
			// its own host still has.
			if _, err := os.Stat(nodePIDFile(n)); err == nil {
				return uninstall(cmd.Context(), n, pluginDir)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&pluginDir, "plugin-dir", libnetwork.DefaultPluginDir, "where the node served its Docker plugin sockets")
	cmd.Flags().StringVar(&name, "name", "", "node name (default: CALICO_NODENAME, else the host name)")
	cmd.Flags().BoolVar(&force, "force", false, "also remove the node's endpoints, and the addresses and records of its Docker networks")
	return cmd
}

func nodeBGPCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{Use: "bgp", Short: "BGP peers of this node only"}
	cmd.PersistentFlags().StringVar(&name, "name", "", "node name (default: this host)")
	cmd.AddCommand(peerCmd(func(cmd *cobra.Command, c *client.Client) (string, error) {
		if name != "" {
			return name, nil
		}
		return thisNode(cmd, c)
	}))
	return cmd
}

func statusCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node's state and its BGP sessions",
		Args:  exactArgs(0),
		RunE: withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			n := name
			var err error
			if n == "" {
				if n, err = thisNode(cmd, c); err != nil {
					return err
				}
			}
			f, err := format()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context(), n)
			if err != nil {
				return err
			}
			if f == "json" || f == "yaml" {
				return output.Print(os.Stdout, f, st, nil)
			}
			fmt.Printf("calico-node %s is %s (pid %d, %d endpoints, reported %s)\n", n, st.State(time.Now()), st.PID, st.Endpoints, st.Updated)
			if st.IPIP != "" {
				fmt.Println("IPIP: " + st.IPIP)
			}
			if st.FastPath != "" {
				fmt.Println("eBPF fast path: " + st.FastPath)
			}
			printWireGuard(st.WireGuard)
			if st.ClusterID != "" {
				fmt.Println("BGP role: route reflector, cluster ID " + st.ClusterID)
			}
			for _, p := range st.Problems {
				fmt.Println("problem: " + p)
			}
			for _, s := range st.Swept {
				fmt.Println("swept: " + s)
			}
			fmt.Println()
			fmt.Println("BGP sessions")
			t := &output.Table{Header: []string{"peer address", "peer type", "as", "state", "since", "routes received", "rejected"}}
			for _, p := range st.BGPPeers {
				typ := p.Type
				if p.Role != "" {
					// the session's part in route reflection: the peer is
					// our client, or a reflector
					typ += ", " + p.Role
				}
				t.Add(p.IP, typ, strconv.FormatUint(uint64(p.ASNumber), 10), p.State, orDash(p.Since), strconv.Itoa(p.Received), strconv.Itoa(p.Rejected))
			}
			if err := t.Write(os.Stdout); err != nil {
				return err
			}
			for _, p := range st.BGPPeers {
				if p.LimitResets > 0 {
					add := "bgp peer add"
					if p.Type == "node" {
						add = "node bgp peer add"
					}
					fmt.Printf("prefix limit: %s sent more than %d prefixes; session reset %d time(s), last %s (to accept them: `calicoctl %s %s as %d --max-prefixes N`)\n",
						p.IP, p.MaxPrefixes, p.LimitResets, p.LastLimitReset, add, p.IP, p.ASNumber)
				}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&name, "name", "", "node name (default: this host)")
	addOutputFlag(cmd)
	return cmd
}
