package libnetwork

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	ipamstore "github.com/calico-go/calico/internal/ipam"
)

// A removed network's pool that workloads outside the network (CALICO_IP,
// container add, CNI) still use stays, and the engine cannot tell the user
// (it removes the network whatever we answer). So it is kept here: shown
// in `calicoctl status`, and removed once its last user is gone. This
// memory ends with the agent; after a restart such a pool simply stays
// (`calicoctl pool remove` takes it).
type pendingPool struct {
	network string
	users   []string
}

// pendingRetry is how often the pending pools are tried again.
const pendingRetry = 5 * time.Second

// keepPending remembers cidr of the removed network and says why it stays.
func (d *Drivers) keepPending(ctx context.Context, network, cidr string) string {
	users, err := d.poolUsers(ctx, []string{cidr})
	if err != nil {
		d.log.Warn("cannot tell who uses the pool", "pool", cidr, "err", err)
	}
	p := pendingPool{network: network, users: users}
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if d.pending == nil {
		d.pending = map[string]pendingPool{}
	}
	d.pending[cidr] = p
	return p.describe(cidr)
}

func (p pendingPool) describe(cidr string) string {
	who := "addresses without an endpoint (`calicoctl ipam check` lists them)"
	if len(p.users) > 0 {
		who = strings.Join(p.users, ", ")
	}
	return fmt.Sprintf("pool %s of removed Docker network %s stays: still used by %s", cidr, p.network, who)
}

// Problems are the lines `calicoctl status` shows for pools that stay.
func (d *Drivers) Problems() []string {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	var out []string
	for cidr, p := range d.pending {
		out = append(out, p.describe(cidr)+"; it goes when they do")
	}
	slices.Sort(out)
	return out
}

// retryPending removes the pending pools nobody uses any more. A pool a
// network took again (a new docker network create with that subnet) or
// that someone removed is forgotten.
func (d *Drivers) retryPending() {
	d.pmu.Lock()
	cidrs := make([]string, 0, len(d.pending))
	for c := range d.pending {
		cidrs = append(cidrs, c)
	}
	d.pmu.Unlock()
	if len(cidrs) == 0 {
		return
	}
	ctx, done := d.call()
	defer done()
	nets, err := datastore.List[networkRecord](ctx, d.c.DS, networkPrefix())
	if err != nil {
		return
	}
	pools, err := d.c.Pools(ctx, 0)
	if err != nil {
		return
	}
	for _, cidr := range cidrs {
		forget := slices.ContainsFunc(nets, func(kv datastore.KV[networkRecord]) bool { return slices.Contains(kv.Value.Pools, cidr) }) ||
			!slices.ContainsFunc(pools, func(p api.Pool) bool { return p.CIDR == cidr })
		if !forget {
			err := d.c.RemovePool(ctx, cidr, false)
			switch {
			case err == nil:
				d.log.Info("removed the pool of a removed network: its last user went", "pool", cidr)
				forget = true
			case errors.Is(err, ipamstore.ErrInUse):
				if users, err := d.poolUsers(ctx, []string{cidr}); err == nil {
					d.pmu.Lock()
					if p, ok := d.pending[cidr]; ok {
						p.users = users
						d.pending[cidr] = p
					}
					d.pmu.Unlock()
				}
			default:
				d.log.Warn("cannot remove the pool of a removed network", "pool", cidr, "err", err)
			}
		}
		if forget {
			d.pmu.Lock()
			delete(d.pending, cidr)
			d.pmu.Unlock()
		}
	}
}
