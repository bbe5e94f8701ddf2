package client

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node reads a registered node.
func (c *Client) Node(ctx context.Context, name string) (api.Node, error) {
	if err := api.ValidateName("node", name); err != nil {
		return api.Node{}, err
	}
	n, _, err := datastore.Get[api.Node](ctx, c.DS, datastore.NodeKey(name))
	if err != nil {
		return n, notFound(err, "no calico node %q in the datastore; start it on that host with `calicoctl node --ip=HOST_IP`", name)
	}
	return n, nil
}

// nodeRecords lists the registered nodes' records.
func (c *Client) nodeRecords(ctx context.Context) ([]api.Node, error) {
	kvs, err := datastore.List[api.Node](ctx, c.DS, datastore.PrefixHosts)
	if err != nil {
		return nil, err
	}
	var out []api.Node
	for _, kv := range kvs {
		if strings.HasSuffix(kv.Key, "/node") {
			out = append(out, kv.Value)
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
		if !strings.HasSuffix(kv.Key, "/node") {
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
// with endpoints is refused unless forced (then they are removed too).
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
	for _, ep := range eps {
		if _, err := c.IPAM.ReleaseHandle(ctx, handleID(ep.Node, ep.Workload)); err != nil {
			return err
		}
	}
	if err := c.IPAM.ReleaseNodeBlocks(ctx, name); err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, datastore.OpTimeout)
	defer cancel()
	if _, err := c.DS.Delete(octx, datastore.PrefixHosts+name+"/", clientv3.WithPrefix()); err != nil {
		return err
	}
	_, err = c.DS.Delete(octx, datastore.StatusKey(name))
	return err
}
