package libnetwork

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/docker/go-plugins-helpers/ipam"

	"github.com/calico-go/calico/internal/api"
	ipamstore "github.com/calico-go/calico/internal/ipam"
)

// Pool ids for networks created without --subnet: addresses then come from
// any pool of the family, as `container add NAME auto` takes them.
const (
	anyPoolV4 = "calico-any-ipv4"
	anyPoolV6 = "calico-any-ipv6"
)

// IPAMDriver is the engine's view of our IPAM.
type IPAMDriver struct{ d *Drivers }

var _ ipam.Ipam = IPAMDriver{}

func (IPAMDriver) GetCapabilities() (*ipam.CapabilitiesResponse, error) {
	return &ipam.CapabilitiesResponse{RequiresMACAddress: false}, nil
}

func (IPAMDriver) GetDefaultAddressSpaces() (*ipam.AddressSpacesResponse, error) {
	return &ipam.AddressSpacesResponse{LocalDefaultAddressSpace: AddressSpace, GlobalDefaultAddressSpace: AddressSpace}, nil
}

// RequestPool names the pool a network takes addresses from. It creates
// nothing: the network driver's CreateNetwork, which sees the network's
// options, creates the pool (the engine calls it after this).
func (i IPAMDriver) RequestPool(r *ipam.RequestPoolRequest) (*ipam.RequestPoolResponse, error) {
	if r.SubPool != "" {
		return nil, fmt.Errorf("calico-ipam: --ip-range is not supported; give the range as its own --subnet (a pool)")
	}
	if len(r.Options) > 0 {
		for k := range r.Options {
			return nil, fmt.Errorf("calico-ipam: unknown --ipam-opt %q; calico-ipam takes none", k)
		}
	}
	if r.Pool == "" {
		if r.V6 {
			return &ipam.RequestPoolResponse{PoolID: anyPoolV6, Pool: "::/0"}, nil
		}
		return &ipam.RequestPoolResponse{PoolID: anyPoolV4, Pool: "0.0.0.0/0"}, nil
	}
	p, err := api.ValidatePoolCIDR(r.Pool)
	if err != nil {
		return nil, fmt.Errorf("calico-ipam: %v", err)
	}
	if p.Addr().Is6() != r.V6 {
		return nil, fmt.Errorf("calico-ipam: subnet %s is not of the requested family", p)
	}
	return &ipam.RequestPoolResponse{PoolID: p.String(), Pool: p.String()}, nil
}

func (IPAMDriver) ReleasePool(*ipam.ReleasePoolRequest) error { return nil }

// RequestAddress assigns one address, or the exact one the user asked for
// with `docker run --ip`. The engine's gateway request gets the address
// workloads really use as their gateway, which no pool contains, so it
// costs no address.
func (i IPAMDriver) RequestAddress(r *ipam.RequestAddressRequest) (*ipam.RequestAddressResponse, error) {
	ctx, done := i.d.call()
	defer done()
	v6 := r.PoolID == anyPoolV6
	var pools []string
	if r.PoolID != anyPoolV4 && r.PoolID != anyPoolV6 {
		p, err := netip.ParsePrefix(r.PoolID)
		if err != nil {
			return nil, fmt.Errorf("calico-ipam: unknown pool id %q", r.PoolID)
		}
		v6 = p.Addr().Is6()
		pools = []string{p.String()}
	}
	if r.Options["RequestAddressType"] == "com.docker.network.gateway" {
		if v6 {
			return &ipam.RequestAddressResponse{Address: gatewayV6 + "/128"}, nil
		}
		return &ipam.RequestAddressResponse{Address: gatewayV4 + "/32"}, nil
	}
	if r.Address != "" {
		a, err := netip.ParseAddr(r.Address)
		if err != nil {
			return nil, fmt.Errorf("calico-ipam: bad address %q", r.Address)
		}
		if len(pools) == 1 && !netip.MustParsePrefix(pools[0]).Contains(a) {
			return nil, fmt.Errorf("calico-ipam: address %s is outside the network's subnet %s", a, pools[0])
		}
		if err := i.d.c.IPAM.Assign(ctx, a, api.LibnetworkHandle(i.d.node), i.d.node); err != nil {
			return nil, fmt.Errorf("calico-ipam: %v", i.d.c.TakenBy(ctx, a, err))
		}
		i.d.log.Info("assigned address", "addr", a, "pool", r.PoolID)
		return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(a, a.BitLen()).String()}, nil
	}
	family := 4
	if v6 {
		family = 6
	}
	a, err := i.d.c.IPAM.AutoAssign(ctx, api.LibnetworkHandle(i.d.node), i.d.node, family, pools)
	if err != nil {
		return nil, fmt.Errorf("calico-ipam: %v", err)
	}
	i.d.log.Info("assigned address", "addr", a, "pool", r.PoolID)
	return &ipam.RequestAddressResponse{Address: netip.PrefixFrom(a, a.BitLen()).String()}, nil
}

// ReleaseAddress gives an address back. Releasing one that is not
// assigned succeeds: the engine retries, and a second release is no error.
func (i IPAMDriver) ReleaseAddress(r *ipam.ReleaseAddressRequest) error {
	a, err := netip.ParseAddr(r.Address)
	if err != nil {
		return fmt.Errorf("calico-ipam: bad address %q", r.Address)
	}
	if a.String() == gatewayV4 || a.String() == gatewayV6 {
		return nil
	}
	ctx, done := i.d.call()
	defer done()
	// Only ours, checked in the same transaction as the release: a late
	// retry must not free an address that has since gone to a workload of
	// `container add` or CALICO_IP.
	if err := i.d.c.IPAM.ReleaseFrom(ctx, a, api.LibnetworkHandle(i.d.node)); isNotOurs(err) {
		return nil
	} else if err != nil {
		return fmt.Errorf("calico-ipam: %v", err)
	}
	i.d.log.Info("released address", "addr", a)
	return nil
}

func isNotAssigned(err error) bool { return errors.Is(err, ipamstore.ErrNotAssigned) }

// isNotOurs: a release for the driver's handle found the address free, or
// held by someone else (and so left alone).
func isNotOurs(err error) bool {
	return errors.Is(err, ipamstore.ErrNotAssigned) || errors.Is(err, ipamstore.ErrNotHolder)
}
