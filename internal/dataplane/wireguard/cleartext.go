package wireguard

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/calico-go/calico/internal/calc"
)

// CleartextTable is the nftables table this package owns: one raw
// prerouting rule dropping packets between pool addresses that arrive in
// the clear from sources that must use WireGuard. Without it, anyone on
// the fabric could send as a remote workload in the clear and bypass the
// encryption (and its source check) entirely.
const CleartextTable = "calico-wireguard"

// cleartext converges CleartextTable.
type cleartext struct {
	nft    knftables.Interface
	rule   string // as applied; "" when the table is absent
	synced bool   // rule is known: the first apply always writes, so a table left by an earlier agent goes
	err    error  // why nftables cannot be used, for every Apply
}

func newCleartext() *cleartext {
	nft, err := knftables.New(knftables.IPv4Family, CleartextTable)
	return &cleartext{nft: nft, err: err}
}

// cleartextRule is the drop rule for st, "" when nothing is refused.
func cleartextRule(st calc.WireGuard) string {
	if !st.Enabled || len(st.CleartextFrom) == 0 || len(st.PoolDsts) == 0 {
		return ""
	}
	set := func(ps []netip.Prefix) string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = p.String()
		}
		return "{ " + strings.Join(slices.Compact(s), ", ") + " }"
	}
	// Local workloads (cali*) and the device itself are the only ways in;
	// lo covers the host's own traffic.
	return fmt.Sprintf(`iifname != "%s" iifname != "cali*" iifname != "lo" ip saddr %s ip daddr %s counter drop comment "pool traffic between hosts must come through WireGuard"`,
		st.Device, set(st.CleartextFrom), set(st.PoolDsts))
}

// apply writes the table in one transaction when the rule changed.
func (c *cleartext) apply(st calc.WireGuard) error {
	want := cleartextRule(st)
	if want == c.rule && c.synced && c.err == nil {
		return nil
	}
	if c.err != nil {
		if want == "" {
			return nil
		}
		return fmt.Errorf("nftables for the cleartext check: %w", c.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx := c.nft.NewTransaction()
	tx.Add(&knftables.Table{}) // makes the delete valid when the table is absent
	tx.Delete(&knftables.Table{})
	if want != "" {
		filter, pre, raw := knftables.FilterType, knftables.PreroutingHook, knftables.RawPriority
		tx.Add(&knftables.Table{Comment: knftables.PtrTo("calico-node: WireGuard cleartext check")})
		tx.Add(&knftables.Chain{Name: "prerouting", Type: &filter, Hook: &pre, Priority: &raw})
		tx.Add(&knftables.Rule{Chain: "prerouting", Rule: want})
	}
	if err := c.nft.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables table %s: %w", CleartextTable, err)
	}
	c.rule, c.synced = want, true
	return nil
}
