package nft

import (
	"context"
	"fmt"

	"sigs.k8s.io/knftables"
)

// DeleteTable removes table inet calico from this namespace, with all
// policy, NAT and published ports in it (uninstall; the agent must be
// stopped, or it writes the table again). An absent table is no error.
func DeleteTable(ctx context.Context) error {
	k, err := knftables.New(knftables.InetFamily, TableName)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	tx := k.NewTransaction()
	tx.Add(&knftables.Table{}) // makes the delete valid when the table is absent
	tx.Delete(&knftables.Table{})
	if err := k.Run(ctx, tx); err != nil {
		return fmt.Errorf("nftables: deleting table %s: %w", TableName, err)
	}
	return nil
}
