package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// Node reads a registered node.
func (c *Client) Node(ctx context.Context, name string) (api.Node, error) {
	if err := api.ValidateName("node", name); err != nil {
		return api.Node{}, err
	}
	n, _, err := datastore.Get[api.Node](ctx, c.DS, datastore.NodeKey(name))
	if err != nil {
		return n, notFound(err, "%s", unknownNode(name))
	}
	return n, nil
}

func unknownNode(name string) string {
	return fmt.Sprintf("no calico node %q in the datastore; start it on that host with `calicoctl node --ip=HOST_IP`", name)
}

// nodeRecords lists the registered nodes' records: their keys first, then
// those records alone, in one transaction. Listing the hosts' prefix would
// read every endpoint record too, which the CNI plugin (finding its node
// once per container) would pay for in proportion to the host's workloads.
func (c *Client) nodeRecords(ctx context.Context) ([]api.Node, error) {
	keys, err := c.DS.Keys(ctx, datastore.PrefixHosts)
	if err != nil {
		return nil, err
	}
	var reads []datastore.Read
	for _, k := range keys {
		if datastore.IsNodeKey(k) {
			reads = append(reads, datastore.ReadKey(k))
		}
	}
	if len(reads) == 0 {
		return nil, nil
	}
	recs, _, err := c.DS.Read(ctx, reads...)
	if err != nil {
		return nil, err
	}
	var out []api.Node
	for _, r := range recs {
		for _, kv := range r {
			var n api.Node
			if json.Unmarshal(kv.Value, &n) == nil { // a damaged record names no node
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// CheckNodeAddrs refuses node addresses that lie inside a pool: IPAM would
// give them to workloads, which would then take the host's traffic.
func (c *Client) CheckNodeAddrs(ctx context.Context, node string, addrs ...netip.Addr) error {
	pools, err := c.Pools(ctx, 0)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if !a.IsValid() {
			continue
		}
		if err := api.CheckNodeInPools(node, a, pools); err != nil {
			return err
		}
	}
	return nil
}

// NodeView is a node with its last reported status.
type NodeView struct {
	api.Node
	Status *api.NodeStatus `json:"status,omitempty"`
}

// Nodes lists registered nodes with their status.
func (c *Client) Nodes(ctx context.Context) ([]NodeView, error) {
	kvs, err := datastore.List[api.Node](ctx, c.DS, datastore.PrefixHosts)
	if err != nil {
		return nil, err
	}
	statuses, err := datastore.List[api.NodeStatus](ctx, c.DS, datastore.PrefixStatus)
	if err != nil {
		return nil, err
	}
	byNode := map[string]*api.NodeStatus{}
	for i := range statuses {
		byNode[statuses[i].Value.Node] = &statuses[i].Value
	}
	var out []NodeView
	for _, kv := range kvs {
		if !datastore.IsNodeKey(kv.Key) {
			continue
		}
		out = append(out, NodeView{Node: kv.Value, Status: byNode[kv.Value.Name]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Status reads the status a node last reported.
func (c *Client) Status(ctx context.Context, node string) (api.NodeStatus, error) {
	st, _, err := datastore.Get[api.NodeStatus](ctx, c.DS, datastore.StatusKey(node))
	if err != nil {
		return st, notFound(err, "node %q has not reported status; is calico-node running there? (`calicoctl node --ip=HOST_IP`)", node)
	}
	return st, nil
}

// RemoveNode deletes a node's records and frees its empty blocks. A node
// with endpoints, or with addresses or endpoints of its Docker drivers, is
// refused unless forced; forced, those go too: the endpoints' addresses, the
// drivers' handle (every address calico-ipam gave on that node) and the
// drivers' records, so nothing of the node keeps addresses or blocks held.
func (c *Client) RemoveNode(ctx context.Context, name string, force bool) error {
	if _, err := c.Node(ctx, name); err != nil {
		return err
	}
	eps, err := c.Endpoints(ctx, name)
	if err != nil {
		return err
	}
	if len(eps) > 0 && !force {
		return fmt.Errorf("node %q still has %d endpoint(s); remove them first, or use --force", name, len(eps))
	}
	lnHandle := api.LibnetworkHandle(name)
	lnAddrs, err := c.handleAddrs(ctx, lnHandle)
	if err != nil {
		return err
	}
	prefixes := datastore.LibnetworkNodePrefixes(name)
	lnEndpoints, err := datastore.List[json.RawMessage](ctx, c.DS, prefixes[1])
	if err != nil {
		return err
	}
	if (len(lnAddrs) > 0 || len(lnEndpoints) > 0) && !force {
		return fmt.Errorf("node %q still holds %d address(es) and %d endpoint(s) of Docker networks (libnetwork); remove those containers on that host first, or use --force", name, len(lnAddrs), len(lnEndpoints))
	}
	for _, ep := range eps {
		if _, err := c.IPAM.ReleaseHandle(ctx, api.WorkloadHandle(ep.Node, ep.Workload)); err != nil {
			return err
		}
	}
	if _, err := c.IPAM.ReleaseHandle(ctx, lnHandle); err != nil {
		return err
	}
	if err := c.IPAM.ReleaseNodeBlocks(ctx, name); err != nil {
		return err
	}
	for _, p := range append(prefixes, datastore.HostPrefix(name)) {
		if err := c.DS.DeletePrefix(ctx, p); err != nil {
			return err
		}
	}
	return c.DS.DeleteKey(ctx, datastore.StatusKey(name), 0)
}

// handleAddrs lists the addresses an IPAM handle record names (none when
// it does not exist).
func (c *Client) handleAddrs(ctx context.Context, handle string) ([]string, error) {
	h, _, err := datastore.Get[api.Handle](ctx, c.DS, datastore.HandleKey(handle))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	return h.IPs, err
}
