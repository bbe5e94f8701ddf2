package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// BGPConfig reads the cluster-wide BGP settings (defaults when never set).
func (c *Client) BGPConfig(ctx context.Context) (api.BGPConfig, error) {
	cfg, _, err := datastore.Get[api.BGPConfig](ctx, c.DS, datastore.KeyBGPConfig)
	if errors.Is(err, datastore.ErrNotFound) {
		return api.DefaultBGPConfig(), nil
	}
	return cfg, err
}

func (c *Client) updateBGP(ctx context.Context, fn func(*api.BGPConfig)) error {
	for {
		cfg, rev, err := datastore.Get[api.BGPConfig](ctx, c.DS, datastore.KeyBGPConfig)
		if errors.Is(err, datastore.ErrNotFound) {
			cfg, rev, err = api.DefaultBGPConfig(), 0, nil
		}
		if err != nil {
			return err
		}
		fn(&cfg)
		if err := c.DS.CAS(ctx, datastore.KeyBGPConfig, rev, cfg); !errors.Is(err, datastore.ErrConflict) {
			return err
		}
	}
}

// SetDefaultAS sets the AS number of nodes that have none of their own.
func (c *Client) SetDefaultAS(ctx context.Context, as string) error {
	n, err := api.ParseASNumber(as)
	if err != nil {
		return err
	}
	return c.updateBGP(ctx, func(b *api.BGPConfig) { b.DefaultASNumber = n })
}

// SetNodeMesh turns the full mesh between nodes on or off.
func (c *Client) SetNodeMesh(ctx context.Context, on bool) error {
	return c.updateBGP(ctx, func(b *api.BGPConfig) { b.NodeMesh = on })
}

// AddPeer adds a BGP peer, global when node is "". maxPrefixes 0 leaves
// the limit at api.DefaultMaxPrefixes. Adding a peer that exists replaces
// its record (a new AS or limit).
func (c *Client) AddPeer(ctx context.Context, node, ip, as string, maxPrefixes int) error {
	n, err := api.ParseASNumber(as)
	if err != nil {
		return err
	}
	peer := api.BGPPeer{IP: ip, ASNumber: n, Node: node, MaxPrefixes: maxPrefixes}
	if err := api.ValidateBGPPeer(peer); err != nil {
		return err
	}
	a, _ := netip.ParseAddr(ip)
	peer.IP = a.String()
	if node != "" {
		if _, err := c.Node(ctx, node); err != nil {
			return err
		}
	}
	return c.DS.Put(ctx, peerKey(node, peer.IP), peer)
}

// RemovePeer removes a peer; an unknown one is an error.
func (c *Client) RemovePeer(ctx context.Context, node, ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("bad peer IP %q: %v", ip, err)
	}
	key := peerKey(node, a.String())
	if _, _, err := c.DS.GetRaw(ctx, key); err != nil {
		return notFound(err, "no BGP peer %s; list peers with `calicoctl bgp peer show`", a)
	}
	return c.DS.DeleteKey(ctx, key, 0)
}

func peerKey(node, ip string) string {
	if node == "" {
		return datastore.GlobalPeerKey(ip)
	}
	return datastore.NodePeerKey(node, ip)
}

// Peers lists global peers (node "") or one node's peers; family 4/6 filters.
func (c *Client) Peers(ctx context.Context, node string, family int) ([]api.BGPPeer, error) {
	prefix := datastore.PrefixGlobalPeers
	if node != "" {
		// An unknown node is an error, not an empty list: a typo in --name
		// must not look like "this node has no peers".
		if _, err := c.Node(ctx, node); err != nil {
			return nil, err
		}
		prefix = datastore.NodePeerPrefix(node)
	}
	kvs, err := datastore.List[api.BGPPeer](ctx, c.DS, prefix)
	if err != nil {
		return nil, err
	}
	var out []api.BGPPeer
	for _, kv := range kvs {
		a, err := netip.ParseAddr(kv.Value.IP)
		if err != nil || family == 4 && !a.Is4() || family == 6 && a.Is4() {
			continue
		}
		out = append(out, kv.Value)
	}
	// By address, not as text: 10.0.0.9 comes before 10.0.0.10.
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].IP)
		b, _ := netip.ParseAddr(out[j].IP)
		return a.Less(b)
	})
	return out, nil
}
