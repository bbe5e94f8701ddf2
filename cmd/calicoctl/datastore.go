package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/calico-go/calico/internal/daemon"
	"github.com/calico-go/calico/internal/datastore"
)

// datastoreProgram runs an embedded etcd member in the foreground, with the
// flags of `datastore start`.
const datastoreProgram = "calico-datastore"

func datastoreCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "datastore",
		Short: "Run the embedded etcd datastore (one machine, or a small cluster)",
	}
	var cfg datastore.ServerConfig
	var timeout time.Duration

	start := &cobra.Command{
		Use:   "start",
		Short: "Start an embedded etcd in the background; returns once it serves",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(cfg.DataDir)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return fmt.Errorf("data dir %s: %v", dir, err)
			}
			var files datastore.TLSFiles
			if cfg.TLS {
				if cfg.CertFile != "" || cfg.KeyFile != "" || cfg.TrustedCAFile != "" {
					return fmt.Errorf("give either --tls (certificates made in %s) or --cert-file, --key-file and --ca-file, not both", filepath.Join(dir, "tls"))
				}
				if files, err = datastore.EnsureTLS(dir, cfg.TLSHosts()); err != nil {
					return fmt.Errorf("datastore TLS files in %s: %v", filepath.Join(dir, "tls"), err)
				}
			}
			// Its own program runs the member: linking etcd's server here
			// made every calicoctl command start 40% slower.
			prog, err := siblingBinary(datastoreProgram)
			if err != nil {
				return err
			}
			argv := []string{prog}
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Name != "timeout" {
					argv = append(argv, "--"+f.Name+"="+f.Value.String())
				}
			})
			argv = append(argv, "--data-dir="+dir)
			spec := daemon.Spec{Argv: argv, LogFile: filepath.Join(dir, "etcd.log"), PIDFile: filepath.Join(dir, "etcd.pid")}
			p, err := daemon.Start(spec)
			if err != nil {
				return fmt.Errorf("datastore in %s: %v", dir, err)
			}
			scheme := "http://"
			if cfg.CertFile != "" || cfg.TLS {
				scheme = "https://"
			}
			endpoint := scheme + clientHostPort(cfg.ClientAddr)
			dsCfg := datastore.Config{Endpoints: []string{endpoint}, CAFile: cfg.TrustedCAFile}
			if cfg.ClientCertAuth {
				dsCfg.CertFile, dsCfg.KeyFile = os.Getenv("ETCD_CERT_FILE"), os.Getenv("ETCD_KEY_FILE")
			}
			if cfg.TLS {
				dsCfg = datastore.Config{Endpoints: []string{endpoint}, CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}
			}
			err = daemon.WaitReady(p, spec, timeout, func() error {
				if cfg.ClientCertAuth && !cfg.TLS && dsCfg.CertFile == "" {
					return nil // cannot probe without a client certificate; the server said it started
				}
				c, err := datastore.Connect(context.Background(), dsCfg)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("datastore on %s did not start: %v", cfg.ClientAddr, err)
			}
			fmt.Printf("Datastore (etcd) is serving on %s%s, pid %d, data in %s\n", scheme, cfg.ClientAddr, p.Pid, dir)
			if cfg.TLS {
				// What every client (calicoctl, calico-node) needs, ready
				// for eval "$(calicoctl datastore start ... --tls | grep ^export)".
				fmt.Printf("Clients need a certificate; with the CA and client certificate made in %s:\n", files.Dir)
				fmt.Printf("export ETCD_ENDPOINTS=%s ETCD_CA_CERT_FILE=%s ETCD_CERT_FILE=%s ETCD_KEY_FILE=%s\n",
					shellQuote(endpoint), shellQuote(files.CA), shellQuote(files.ClientCert), shellQuote(files.ClientKey))
			}
			return nil
		},
	}
	cfg.AddFlags(start.Flags(), &timeout)

	// `calicoctl datastore run`, which `datastore start` used to start,
	// runs calico-datastore in its place.
	run := &cobra.Command{
		Use:                "run",
		Short:              "Run the embedded etcd in the foreground (" + datastoreProgram + ")",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			prog, err := siblingBinary(datastoreProgram)
			if err != nil {
				return err
			}
			return syscall.Exec(prog, append([]string{prog}, args...), os.Environ())
		},
	}

	var stopDir string
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop the embedded etcd started with `datastore start`",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			pidFile := filepath.Join(stopDir, "etcd.pid")
			stopped, err := daemon.Stop(pidFile, 10*time.Second)
			var reused *daemon.ReusedError
			if errors.As(err, &reused) {
				return fmt.Errorf("no datastore running for data dir %s: %v", stopDir, err)
			} else if err != nil {
				return err
			}
			if !stopped {
				return fmt.Errorf("no datastore running for data dir %s (no live pid in %s)", stopDir, pidFile)
			}
			fmt.Println("Datastore stopped")
			return nil
		},
	}
	stop.Flags().StringVar(&stopDir, "data-dir", "/var/lib/calico/etcd", "data directory given to `datastore start`")
	cmd.AddCommand(start, run, stop)
	return cmd
}

// clientHostPort is where a client on this host reaches a member listening
// on addr: a wildcard address means the loopback one.
func clientHostPort(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
		h = "127.0.0.1"
		if ip.To4() == nil {
			h = "::1"
		}
	}
	return net.JoinHostPort(h, p)
}

// shellQuote quotes s for a POSIX shell when it holds anything but plain
// path characters.
func shellQuote(s string) string {
	plain := s != ""
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:+,=@[]", r)) {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
