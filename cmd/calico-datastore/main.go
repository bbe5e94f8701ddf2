// Command calico-datastore runs an embedded etcd member in the foreground:
// what `calicoctl datastore start` starts, with the same flags. It is its
// own program so that neither calicoctl (every command paid etcd's server
// start-up: 19 -> 11 ms of CPU for `calicoctl --help`) nor the agent links
// etcd's server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/datastore/etcdserver"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error: "+err.Error())
		os.Exit(1)
	}
}

// run serves until SIGINT or SIGTERM (`calicoctl datastore stop`).
func run(args []string) error {
	var cfg datastore.ServerConfig
	var timeout time.Duration
	fs := pflag.NewFlagSet("calico-datastore", pflag.ContinueOnError)
	cfg.AddFlags(fs, &timeout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := etcdserver.Start(cfg, timeout)
	if err != nil {
		return err
	}
	fmt.Printf("etcd serving on %s\n", s.ClientURL)
	err = s.Wait(ctx)
	s.Close()
	return err
}
