package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/dataplane/dockerfwd"
	"github.com/calico-go/calico/internal/dataplane/fastpath"
	"github.com/calico-go/calico/internal/dataplane/ipip"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/dataplane/nft"
)

// UninstallKernel removes from this network namespace what calico-node
// installed there: the tunnel devices and the IPIP eBPF programs, the eBPF
// fast path's programs (with nf_conntrack_tcp_be_liberal put back), routes
// of protocol 80, our rules in DOCKER-USER/FORWARD, table inet calico, and
// the Docker plugin sockets in pluginDir that nobody serves. Run it with
// the agent stopped (it would put everything back). Workload veths are the
// workloads': they go with them. It tells what it removed; each step runs
// even if another failed.
//
// The table goes after the tunnels: it holds their guards (vxlan-in: VXLAN
// only from nodes, with inner sources they own). Deleted first, an
// uninstall killed or failing before the devices went would leave a VXLAN
// device that decapsulates anybody's datagram, forged inner source and
// all, into this host and on to its workloads, with no guard and no
// policy. In this order every state it can stop in has no tunnel or still
// its guard. (CALICO_FAULT=uninstall-after-STEP kills it after a step:
// tunnels, routes, forward, table.)
func UninstallKernel(ctx context.Context, pluginDir string) (removed []string, err error) {
	var errs []error
	// Tunnels: the IPIP programs (which hold IPIP's own guard) with their
	// device, then the VXLAN device.
	gone, ierr := ipip.Uninstall()
	removed = append(removed, gone...)
	if ierr != nil {
		errs = append(errs, ierr)
	}
	if l, lerr := netlink.LinkByName(api.VXLANDevice); lerr == nil {
		if derr := netlink.LinkDel(l); derr != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", api.VXLANDevice, derr))
		} else {
			removed = append(removed, "device "+api.VXLANDevice)
		}
	}
	// The eBPF fast path's programs (and the conntrack setting it changed):
	// with the agent gone nothing keeps their maps in step with the
	// workloads any more.
	fp, fperr := fastpath.Uninstall()
	removed = append(removed, fp...)
	if fperr != nil {
		errs = append(errs, fperr)
	}
	faultPoint("uninstall-after-tunnels")
	routes, rerr := netlink.RouteListFiltered(netlink.FAMILY_ALL,
		&netlink.Route{Protocol: netdev.RouteProtocol, Table: unix.RT_TABLE_UNSPEC},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if rerr != nil {
		errs = append(errs, fmt.Errorf("list routes of protocol %d: %w", netdev.RouteProtocol, rerr))
	}
	for _, r := range routes {
		if derr := netlink.RouteDel(&r); derr != nil && !errors.Is(derr, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, derr))
		} else {
			removed = append(removed, "route "+r.String())
		}
	}
	faultPoint("uninstall-after-routes")
	changed, ferr := dockerfwd.Remove(ctx)
	for _, c := range changed {
		removed = append(removed, "rule in "+c)
	}
	if ferr != nil {
		errs = append(errs, ferr)
	}
	faultPoint("uninstall-after-forward")
	if nerr := nft.DeleteTable(ctx); nerr != nil {
		errs = append(errs, nerr)
	} else {
		removed = append(removed, "nftables table inet "+nft.TableName)
	}
	faultPoint("uninstall-after-table")
	if pluginDir != "" {
		for _, s := range []string{"calico.sock", "calico-ipam.sock"} {
			p := filepath.Join(pluginDir, s)
			if _, serr := os.Lstat(p); serr != nil {
				continue
			}
			if c, derr := net.DialTimeout("unix", p, time.Second); derr == nil {
				c.Close()
				errs = append(errs, fmt.Errorf("%s: a process still serves it; stop it first", p))
				continue
			}
			if rerr := os.Remove(p); rerr != nil {
				errs = append(errs, rerr)
			} else {
				removed = append(removed, "socket "+p)
			}
		}
	}
	return removed, errors.Join(errs...)
}
