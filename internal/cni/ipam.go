package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
)

// The calico-ipam plugin, for main plugins other than calico (bridge,
// ptp, macvlan): addresses from Calico's pools, held by a handle of the
// attachment. The calico plugin itself does not run it: it assigns
// through client.AddWorkload under the workload's own handle, in the same
// process.

// IPAMFuncs are the calico-ipam plugin's commands.
func IPAMFuncs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: IPAMAdd, Del: IPAMDel, Check: IPAMCheck, Status: Status}
}

// IPAMHandle holds the addresses calico-ipam gives one attachment. The
// doubled '~' keeps it apart from workload handles (node~workload), which
// the agent releases when their workload has no endpoint: an attachment
// of another main plugin never has one.
func IPAMHandle(node, workload string) string { return node + "~~cni~" + workload }

// IPAMAdd gives the attachment its addresses: those its handle already
// holds (a repeated ADD takes nothing more), else new ones.
func IPAMAdd(args *skel.CmdArgs) error {
	return attach(args, func(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
		handle := IPAMHandle(s.node, name)
		held, err := s.c.HeldBy(ctx, handle)
		if err != nil {
			return nil, cniError(err, "reading handle "+handle)
		}
		want, err := s.conf.requestedIPs()
		if err != nil {
			return nil, err
		}
		var got []netip.Addr
		// A failed ADD leaves nothing: the runtime will not DEL what it never
		// got.
		undo := func() { s.c.IPAM.ReleaseHandle(context.WithoutCancel(ctx), handle) }
		for _, w := range want {
			var a netip.Addr
			switch w {
			case "auto", "auto6":
				family := 4
				if w == "auto6" {
					family = 6
				}
				if a = takeFamily(&held, family); !a.IsValid() {
					a, err = s.c.IPAM.AutoAssign(ctx, handle, s.node, family, s.conf.IPAM.pools())
				}
			default:
				a = netip.MustParseAddr(w) // requestedIPs parsed it
				if i := indexOf(held, a); i >= 0 {
					held = append(held[:i], held[i+1:]...)
				} else {
					err = s.c.IPAM.Assign(ctx, a, handle, s.node)
				}
			}
			if err != nil {
				undo()
				return nil, cniError(err, "assigning an address")
			}
			got = append(got, a)
		}
		for _, a := range held { // held from an earlier request, not asked for now
			if err := s.c.IPAM.ReleaseFrom(ctx, a, handle); err != nil && !errors.Is(err, ipam.ErrNotAssigned) {
				return nil, cniError(err, "releasing "+a.String())
			}
		}
		res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
		for _, a := range got {
			res.IPs = append(res.IPs, &current.IPConfig{Address: net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}})
		}
		return res, nil
	})
}

func takeFamily(held *[]netip.Addr, family int) netip.Addr {
	for i, a := range *held {
		if a.Is4() == (family == 4) {
			*held = append((*held)[:i], (*held)[i+1:]...)
			return a
		}
	}
	return netip.Addr{}
}

func indexOf(as []netip.Addr, a netip.Addr) int {
	for i, x := range as {
		if x == a {
			return i
		}
	}
	return -1
}

// IPAMDel releases what the attachment's handle holds; nothing is no error.
func IPAMDel(args *skel.CmdArgs) error {
	return attach(args, func(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
		if _, err := s.c.IPAM.ReleaseHandle(ctx, IPAMHandle(s.node, name)); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return nil, cniError(err, "releasing the attachment's addresses")
		}
		return nil, nil
	})
}

// IPAMCheck makes sure the attachment's handle still holds addresses.
func IPAMCheck(args *skel.CmdArgs) error {
	return attach(args, func(ctx context.Context, s *session, args *skel.CmdArgs, name string) (types.Result, error) {
		held, err := s.c.HeldBy(ctx, IPAMHandle(s.node, name))
		if err != nil {
			return nil, cniError(err, "reading the attachment's handle")
		}
		if len(held) == 0 {
			return nil, types.NewError(types.ErrUnknownContainer, fmt.Sprintf("calico-ipam: container %s holds no address; re-create its network (DEL then ADD)", args.ContainerID), "")
		}
		return nil, nil
	})
}
