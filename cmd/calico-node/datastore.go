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

// runDatastore runs an embedded etcd member in the foreground until
// SIGINT or SIGTERM (`calicoctl datastore stop`), with the flags of
// `calicoctl datastore start`.
func runDatastore(args []string) error {
	var cfg datastore.ServerConfig
	var timeout time.Duration
	fs := pflag.NewFlagSet("calico-node datastore-run", pflag.ContinueOnError)
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
