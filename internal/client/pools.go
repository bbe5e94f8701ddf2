package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/ipam"
)

// PoolOptions are the flags of `pool add`.
type PoolOptions struct {
	IPIPMode    api.EncapMode
	VXLANMode   api.EncapMode
	NATOutgoing bool
	BlockSize   int // 0: the default for the family
	Disabled    bool
}

// Pools lists pools sorted by CIDR; family 4 or 6 filters, 0 lists both.
func (c *Client) Pools(ctx context.Context, family int) ([]api.Pool, error) {
	kvs, err := datastore.List[api.Pool](ctx, c.DS, datastore.PrefixPools)
	if err != nil {
		return nil, err
	}
	var out []api.Pool
	for _, kv := range kvs {
		p, err := netip.ParsePrefix(kv.Value.CIDR)
		if err != nil {
			continue
		}
		if family == 4 && !p.Addr().Is4() || family == 6 && p.Addr().Is4() {
			continue
		}
		out = append(out, kv.Value)
	}
	// By address, not as text: 9.0.0.0/8 comes before 10.0.0.0/8, and
	// IPv4 before IPv6.
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParsePrefix(out[i].CIDR)
		b, _ := netip.ParsePrefix(out[j].CIDR)
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	return out, nil
}

// AddPools creates pools, or overrides the options of pools that exist (as the
// seed does when it re-adds a pool without --ipip). All are validated before
// any is written.
func (c *Client) AddPools(ctx context.Context, cidrs []string, o PoolOptions) ([]api.Pool, error) {
	existing, err := c.Pools(ctx, 0)
	if err != nil {
		return nil, err
	}
	nodes, err := c.nodeRecords(ctx)
	if err != nil {
		return nil, err
	}
	var pools []api.Pool
	for _, s := range cidrs {
		prefix, err := api.ValidatePoolCIDR(s)
		if err != nil {
			return nil, err
		}
		p := api.Pool{
			CIDR:        prefix.String(),
			IPIPMode:    o.IPIPMode.OrNever(),
			VXLANMode:   o.VXLANMode.OrNever(),
			NATOutgoing: o.NATOutgoing,
			BlockSize:   o.BlockSize,
			Disabled:    o.Disabled,
		}
		if p.BlockSize == 0 {
			p.BlockSize = api.DefaultBlockSize(prefix)
		}
		for _, old := range existing {
			// Blocks already carved keep their size: changing it would orphan them.
			if old.CIDR == p.CIDR && o.BlockSize == 0 {
				p.BlockSize = old.BlockSize
			}
		}
		if err := api.ValidatePool(p, append(existing, pools...)); err != nil {
			return nil, err
		}
		// Checked on every write, also for a pool that exists: its options
		// may be rewritten, never its claim over a host's address.
		if err := api.CheckPoolNodes(prefix, nodes); err != nil {
			return nil, err
		}
		pools = append(pools, p)
	}
	for _, p := range pools {
		if err := c.DS.Put(ctx, datastore.PoolKey(p.CIDR), p); err != nil {
			return nil, err
		}
	}
	return pools, nil
}

// RemovePool deletes a pool with its empty blocks and their claims. A pool
// with addresses in use is refused unless forced; forced, the blocks still
// holding addresses are kept until those addresses are released.
func (c *Client) RemovePool(ctx context.Context, cidr string, force bool) error {
	prefix, err := api.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	key := datastore.PoolKey(prefix.String())
	if _, _, err := c.DS.GetRaw(ctx, key); err != nil {
		return notFound(err, "no pool %s; list pools with `calicoctl pool show`", prefix)
	}
	_, err = c.IPAM.RemovePool(ctx, key, force)
	if errors.Is(err, ipam.ErrNoPools) {
		return fmt.Errorf("no pool %s; list pools with `calicoctl pool show`", prefix)
	}
	return err
}
