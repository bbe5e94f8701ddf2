package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/dataplane/netdev"
	"github.com/calico-go/calico/internal/datastore"
)

// What one workload's endpoint is made of: a record, a veth and an IPAM
// handle, all three named by node and workload alone. These helpers let
// AddWorkload and RemoveWorkload recognise and finish what an interrupted
// run of either left behind.

// lockWorkload makes runs of container add and remove for one workload on
// one host take turns, across processes: a rerun must not take the veth or
// the addresses of a run still in progress for its leftovers. The lock is
// an flock, so a killed run releases it, on a file of the workload's own
// (named by its interface), removed by unlock so the directory holds only
// the workloads being added or removed. Workloads once shared 256 files by
// hash: in bursts of 20 adds, one waited for another's whole call (0.48 s
// measured by the bench).
func lockWorkload(ctx context.Context, node, name string) (unlock func(), err error) {
	dir := "/run/calico/locks"
	if d := os.Getenv("CALICO_STATE_DIR"); d != "" {
		dir = filepath.Join(d, "run", "calico", "locks")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("workload lock directory: %w", err)
	}
	path := filepath.Join(dir, "workload-"+api.WorkloadIfaceName(node, name))
	// Waits are short at first: the holder is usually a run about to end.
	delay := time.Millisecond
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, fmt.Errorf("workload lock: %w", err)
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			if lockedPath(f, path) {
				// Remove before closing: whoever opened the file meanwhile
				// sees it is no longer the path's and starts over.
				return func() { os.Remove(path); f.Close() }, nil
			}
			f.Close() // its holder removed it after we opened it
			continue
		}
		f.Close()
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("workload lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("container %q: another add or remove of it on host %s is still running: %w", name, node, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// lockedPath says whether the open file f is still the one path names.
func lockedPath(f *os.File, path string) bool {
	var open, named unix.Stat_t
	if unix.Fstat(int(f.Fd()), &open) != nil || unix.Stat(path, &named) != nil {
		return false
	}
	return open.Dev == named.Dev && open.Ino == named.Ino
}

// heldBy lists the addresses IPAM allocates to handle: those its record
// names that the blocks agree on (the block is authoritative).
func (c *Client) heldBy(ctx context.Context, handle string) ([]netip.Addr, error) {
	recs, _, err := c.DS.Read(ctx, datastore.ReadKey(datastore.HandleKey(handle)))
	if err != nil {
		return nil, err
	}
	return c.heldIn(ctx, handle, recs[0])
}

// heldIn is heldBy with the handle's record already read (none: nothing).
func (c *Client) heldIn(ctx context.Context, handle string, rec []datastore.Record) ([]netip.Addr, error) {
	if len(rec) == 0 {
		return nil, nil
	}
	var h api.Handle
	if err := json.Unmarshal(rec[0].Value, &h); err != nil {
		return nil, fmt.Errorf("datastore record %s is not valid: %w", rec[0].Key, err)
	}
	var out []netip.Addr
	for _, s := range h.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil || slices.Contains(out, a) {
			continue
		}
		info, err := c.IPAM.Info(ctx, a)
		if err != nil {
			return nil, err
		}
		if info.Assigned && info.Handle == handle {
			out = append(out, a)
		}
	}
	return out, nil
}

// HeldBy is heldBy for the entry points that hold addresses under a
// handle of their own (the CNI IPAM plugin).
func (c *Client) HeldBy(ctx context.Context, handle string) ([]netip.Addr, error) {
	return c.heldBy(ctx, handle)
}

// assign takes a for handle; an address the handle already holds is no
// conflict (an interrupted run of the same workload took it).
func (c *Client) assign(ctx context.Context, a netip.Addr, handle, node string) error {
	err := c.IPAM.Assign(ctx, a, handle, node)
	if err == nil {
		return nil
	}
	if info, ierr := c.IPAM.Info(ctx, a); ierr == nil && info.Assigned && info.Handle == handle {
		return nil
	}
	return c.TakenBy(ctx, a, err)
}

// confirmHeld makes sure handle holds every address of ep once the record
// exists: the agent's sweeper may have released a leftover handle between
// our reading it and the record appearing (it never releases one with a
// record). A released address is taken again; one taken by someone else
// is an error.
func (c *Client) confirmHeld(ctx context.Context, ep api.Endpoint, handle string, addrs []netip.Addr) error {
	for _, a := range addrs {
		info, err := c.IPAM.Info(ctx, a)
		if err != nil {
			return err
		}
		switch {
		case info.Assigned && info.Handle == handle:
		case !info.Assigned:
			if err := c.IPAM.Assign(ctx, a, handle, ep.Node); err != nil {
				return fmt.Errorf("container %q: re-taking %s: %w", ep.Workload, a, err)
			}
		default:
			who := c.holder(ctx, a)
			if who == "" {
				who = "IPAM handle " + info.Handle
			}
			return fmt.Errorf("container %q: its address %s is held by %s; remove the container and add it again", ep.Workload, a, who)
		}
	}
	return nil
}

// removeLeftovers removes, for a workload without a record, the derived
// veth and everything its handle holds; found (if not nil) gets what was
// there. Both are tried whatever the other's fate. Callers hold
// lockWorkload.
func (c *Client) removeLeftovers(ctx context.Context, node, name string, found *[]string) error {
	note := func(what string) {
		if found != nil {
			*found = append(*found, what)
		}
	}
	var errs []error
	iface := api.WorkloadIfaceName(node, name)
	if netdev.LinkExists(iface) {
		if err := netdev.RemoveWorkload(iface); err != nil {
			errs = append(errs, fmt.Errorf("container %q: leftover interface: %w", name, err))
		} else {
			note("interface " + iface)
		}
	}
	handle := api.WorkloadHandle(node, name)
	if _, _, err := c.DS.GetRaw(ctx, datastore.HandleKey(handle)); err == nil {
		if freed, err := c.IPAM.ReleaseHandle(ctx, handle); err != nil {
			errs = append(errs, err)
		} else if len(freed) > 0 {
			note(fmt.Sprintf("IPAM handle %s (addresses %v)", handle, freed))
		} else {
			note("IPAM handle " + handle)
		}
	} else if !errors.Is(err, datastore.ErrNotFound) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sameWorkload says whether ep is what req (with its fixed addresses)
// would make, so a rerun of the request is done once ep is wired.
func sameWorkload(ep api.Endpoint, req WorkloadRequest, fixed []netip.Addr) bool {
	if ep.InterfaceName != api.WorkloadIfaceName(req.Node, req.Name) || ep.Orchestrator != req.Orchestrator ||
		ep.ContainerID != req.ContainerID || ep.NetnsPath != req.NetnsPath || ep.WorkloadIface != req.Interface ||
		!slices.Equal(ep.Profiles, req.Profiles) && len(ep.Profiles)+len(req.Profiles) > 0 {
		return false
	}
	var have []netip.Addr
	for _, n := range append(slices.Clone(ep.IPv4Nets), ep.IPv6Nets...) {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return false
		}
		have = append(have, p.Addr())
	}
	for _, a := range fixed {
		i := slices.Index(have, a)
		if i < 0 {
			return false
		}
		have = slices.Delete(have, i, i+1)
	}
	for _, s := range req.IPs { // what is left must be the autos, family by family
		if s != "auto" && s != "auto6" {
			continue
		}
		i := slices.IndexFunc(have, func(a netip.Addr) bool { return a.Is4() == (s == "auto") })
		if i < 0 {
			return false
		}
		have = slices.Delete(have, i, i+1)
	}
	return len(have) == 0
}
