// Package decode turns datastore records into a calc.Snapshot: the one
// decoder every reader of the datastore's model uses (the agent's syncer,
// and `calicoctl why`, which must see exactly what the agents see).
package decode

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
	"github.com/calico-go/calico/internal/resource"
)

// Records reach the agent straight from etcd, where anyone with write access
// (or a buggy client) can put anything. Every record is therefore decoded
// AND validated before it may change the snapshot: a record that does not
// decode, or decodes to something no client would have written (a rule that
// does not parse, an interface that is not one of ours, an address outside
// every pool, a key that disagrees with its value), is skipped and the last
// good value under that key is kept, so one bad record never tears down
// traffic and never steers the dataplane somewhere it must not go.

// kind is what a key holds.
type kind int

const (
	kindNone kind = iota
	kindBGPConfig
	kindGlobalPeer
	kindPool
	kindProfile
	kindNode
	kindEndpoint
	kindNodePeer
	kindBlock
	kindEncryption
	kindPolicy
	kindNetworkSet
)

// loc says where a key's record lives in the snapshot: its kind, its id in
// the kind's map, and the names the key itself carries.
type loc struct {
	kind kind
	id   string
	node string // host/<node>/...
	name string // last key segment: workload, peer IP, pool or block CIDR, profile, policy or set name
}

// locate maps a datastore key to its place in the snapshot; ok is false for
// keys the calculation does not use (status records, claims, handles).
func locate(key string) (loc, bool) {
	rest, ok := strings.CutPrefix(key, datastore.Root)
	if !ok {
		return loc{}, false
	}
	parts := strings.Split(rest, "/")
	var l loc
	switch {
	case rest == "config/bgp":
		l.kind = kindBGPConfig
	case rest == "config/encryption":
		l.kind = kindEncryption
	case len(parts) == 3 && parts[0] == "bgp" && parts[1] == "peer":
		l.kind, l.id, l.name = kindGlobalPeer, parts[2], parts[2]
	case len(parts) == 2 && parts[0] == "pool":
		l.kind, l.name = kindPool, datastore.UnescapeCIDR(parts[1])
		l.id = l.name
	case len(parts) == 2 && parts[0] == "profile":
		l.kind, l.id, l.name = kindProfile, parts[1], parts[1]
	case len(parts) == 2 && parts[0] == "policy":
		l.kind, l.id, l.name = kindPolicy, parts[1], parts[1]
	case len(parts) == 2 && parts[0] == "networkset":
		l.kind, l.id, l.name = kindNetworkSet, parts[1], parts[1]
	case len(parts) == 3 && parts[0] == "host" && parts[2] == "node":
		l.kind, l.id, l.node = kindNode, parts[1], parts[1]
	case len(parts) == 4 && parts[0] == "host" && parts[2] == "endpoint":
		l.kind, l.id, l.node, l.name = kindEndpoint, parts[1]+"/"+parts[3], parts[1], parts[3]
	case len(parts) == 5 && parts[0] == "host" && parts[2] == "bgp" && parts[3] == "peer":
		l.kind, l.id, l.node, l.name = kindNodePeer, parts[1]+"/"+parts[4], parts[1], parts[4]
	case len(parts) == 2 && parts[0] == "policy":
		l.kind, l.id, l.name = kindPolicy, parts[1], parts[1]
	case len(parts) == 2 && parts[0] == "networkset":
		l.kind, l.id, l.name = kindNetworkSet, parts[1], parts[1]
	case len(parts) == 3 && parts[0] == "ipam" && parts[1] == "block":
		l.kind, l.name = kindBlock, datastore.UnescapeCIDR(parts[2])
		l.id = l.name
	default:
		return loc{}, false
	}
	return l, true
}

// Into applies one datastore record to a snapshot (value nil: the key
// was deleted). It reports whether the key matters to the calculation at
// all, and an error for a record that does not decode or validate; the
// snapshot then keeps what it had under that key.
func Into(s *calc.Snapshot, key string, value []byte) (relevant bool, err error) {
	l, ok := locate(key)
	if !ok {
		return false, nil
	}
	if value == nil {
		remove(s, l)
		return true, nil
	}
	if err := apply(s, l, value); err != nil {
		return true, fmt.Errorf("record %s skipped: %v", clip(key), err)
	}
	return true, nil
}

// EndpointID is the key of an endpoint record's place in
// calc.Snapshot.Endpoints; ok is false for any other key.
func EndpointID(key string) (id string, ok bool) {
	l, ok := locate(key)
	if !ok || l.kind != kindEndpoint {
		return "", false
	}
	return l.id, true
}

// BlockID is the key of an IPAM block record's place in
// calc.Snapshot.Blocks (its CIDR); ok is false for any other key.
func BlockID(key string) (id string, ok bool) {
	l, ok := locate(key)
	if !ok || l.kind != kindBlock {
		return "", false
	}
	return l.id, true
}

// Snapshot builds a snapshot from a full listing. Pools go first, so
// endpoints and blocks are checked against every pool whatever the listing's
// order. A bad record keeps its value from old (the snapshot before this
// listing, nil for none): a re-list after a broken watch must not drop a
// good record just because it has since been overwritten with garbage.
func Snapshot(old *calc.Snapshot, kvs map[string][]byte) (*calc.Snapshot, []error) {
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		if l, ok := locate(k); ok && l.kind == kindPool {
			return 0
		}
		return 1
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	fresh := calc.NewSnapshot()
	var errs []error
	for _, k := range keys {
		if _, err := Into(fresh, k, kvs[k]); err != nil {
			errs = append(errs, err)
			if old != nil {
				carry(old, fresh, k)
			}
		}
	}
	return fresh, errs
}

// carry copies the value under key from one snapshot to another, if any.
func carry(from, to *calc.Snapshot, key string) {
	l, ok := locate(key)
	if !ok {
		return
	}
	switch l.kind {
	case kindBGPConfig:
		to.BGP = from.BGP
	case kindEncryption:
		to.Encryption = from.Encryption
	case kindGlobalPeer:
		copyEntry(from.GlobalPeers, to.GlobalPeers, l.id)
	case kindPool:
		copyEntry(from.Pools, to.Pools, l.id)
	case kindProfile:
		copyEntry(from.Profiles, to.Profiles, l.id)
	case kindNode:
		copyEntry(from.Nodes, to.Nodes, l.id)
	case kindEndpoint:
		copyEntry(from.Endpoints, to.Endpoints, l.id)
	case kindNodePeer:
		copyEntry(from.NodePeers, to.NodePeers, l.id)
	case kindBlock:
		copyEntry(from.Blocks, to.Blocks, l.id)
	case kindPolicy:
		copyEntry(from.Policies, to.Policies, l.id)
	case kindNetworkSet:
		copyEntry(from.NetworkSets, to.NetworkSets, l.id)
	}
}

func copyEntry[V any](from, to map[string]V, id string) {
	if v, ok := from[id]; ok {
		to[id] = v
	}
}

func remove(s *calc.Snapshot, l loc) {
	switch l.kind {
	case kindBGPConfig:
		s.BGP = api.DefaultBGPConfig()
	case kindEncryption:
		s.Encryption = api.EncryptionConfig{}
	case kindGlobalPeer:
		delete(s.GlobalPeers, l.id)
	case kindPool:
		delete(s.Pools, l.id)
	case kindProfile:
		delete(s.Profiles, l.id)
	case kindNode:
		delete(s.Nodes, l.id)
	case kindEndpoint:
		delete(s.Endpoints, l.id)
	case kindNodePeer:
		delete(s.NodePeers, l.id)
	case kindBlock:
		delete(s.Blocks, l.id)
	case kindPolicy:
		delete(s.Policies, l.id)
	case kindNetworkSet:
		delete(s.NetworkSets, l.id)
	}
}

// apply decodes and validates value and stores it; on error s is unchanged.
func apply(s *calc.Snapshot, l loc, value []byte) error {
	switch l.kind {
	case kindBGPConfig:
		v, err := decode[api.BGPConfig](value)
		if err == nil {
			err = checkBGPConfig(v)
		}
		if err == nil {
			s.BGP = v
		}
		return err
	case kindEncryption:
		v, err := decode[api.EncryptionConfig](value)
		if err == nil && v.Rotation < 0 {
			err = errors.New("rotation count is negative")
		}
		if err == nil {
			s.Encryption = v
		}
		return err
	case kindGlobalPeer:
		return store(s.GlobalPeers, l.id, value, func(p api.BGPPeer) error { return checkPeer(p, l, "") })
	case kindPool:
		return store(s.Pools, l.id, value, func(p api.Pool) error { return checkPool(p, l) })
	case kindProfile:
		return store(s.Profiles, l.id, value, func(p api.Profile) error { return checkProfile(p, l) })
	case kindNode:
		return store(s.Nodes, l.id, value, func(n api.Node) error { return checkNode(n, l) })
	case kindEndpoint:
		return store(s.Endpoints, l.id, value, func(ep api.Endpoint) error { return checkEndpoint(s, ep, l) })
	case kindNodePeer:
		return store(s.NodePeers, l.id, value, func(p api.BGPPeer) error { return checkPeer(p, l, l.node) })
	case kindBlock:
		return store(s.Blocks, l.id, value, func(b api.Block) error { return checkBlock(s, b, l) })
	case kindPolicy:
		r, err := decodeResource(datastore.PolicyKey(l.name), value)
		if err == nil {
			s.Policies[l.id] = *r.(*resource.GlobalNetworkPolicy)
		}
		return err
	case kindNetworkSet:
		r, err := decodeResource(datastore.NetworkSetKey(l.name), value)
		if err == nil {
			s.NetworkSets[l.id] = *r.(*resource.GlobalNetworkSet)
		}
		return err
	}
	return nil
}

// store decodes value, validates it with check and puts it in m[id].
func store[V any](m map[string]V, id string, value []byte, check func(V) error) error {
	v, err := decode[V](value)
	if err != nil {
		return err
	}
	if err := check(v); err != nil {
		return err
	}
	m[id] = v
	return nil
}

// decodeResource holds a v3 resource's record to what `calicoctl apply`
// would accept from a file (strict fields, selectors that parse, known
// actions, ports and nets) and to its key. Its problems quote the record's
// values, so they are clipped like a hostile key.
func decodeResource(key string, value []byte) (resource.Resource, error) {
	r, err := datastore.DecodeResource(key, value)
	if err != nil {
		return nil, errors.New(clip(err.Error()))
	}
	return r, nil
}

// decode parses one JSON object. `null` and other non-objects are refused:
// json.Unmarshal would turn `null` into a zero record without complaint.
func decode[V any](value []byte) (V, error) {
	var v V
	trimmed := strings.TrimSpace(string(value))
	if !strings.HasPrefix(trimmed, "{") {
		return v, errors.New("does not decode: not a JSON object")
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return v, fmt.Errorf("does not decode: %v", err)
	}
	return v, nil
}

func checkBGPConfig(c api.BGPConfig) error {
	if c.DefaultASNumber == 0 {
		return errors.New("default AS number 0 is reserved")
	}
	return nil
}

// checkPeer validates a BGP peer stored under .../peer/<ip>; node is the
// host the key names ("" for a global peer).
func checkPeer(p api.BGPPeer, l loc, node string) error {
	if err := api.ValidateBGPPeer(p); err != nil {
		return err
	}
	if p.Node != node {
		return fmt.Errorf("peer names node %s but is stored for %s", clip(strconv.Quote(p.Node)), orGlobal(node))
	}
	a, _ := netip.ParseAddr(p.IP)
	if k, err := netip.ParseAddr(l.name); err != nil || k != a {
		return fmt.Errorf("peer %s is stored under %s", a, clip(strconv.Quote(l.name)))
	}
	return nil
}

func orGlobal(node string) string {
	if node == "" {
		return "all nodes (a global peer)"
	}
	return "node " + node
}

func checkPool(p api.Pool, l loc) error {
	if err := api.ValidatePool(p, nil); err != nil {
		return err
	}
	prefix, _ := netip.ParsePrefix(p.CIDR)
	if prefix.String() != l.name {
		return fmt.Errorf("pool %s is stored under %s", prefix, clip(strconv.Quote(l.name)))
	}
	return nil
}

func checkProfile(p api.Profile, l loc) error {
	if err := api.ValidateProfile(p); err != nil {
		return err
	}
	if p.Name != l.name {
		return fmt.Errorf("profile %s is stored under %s", p.Name, clip(strconv.Quote(l.name)))
	}
	return nil
}

func checkNode(n api.Node, l loc) error {
	if err := api.ValidateNode(n); err != nil {
		return err
	}
	if n.Name != l.node {
		return fmt.Errorf("node %s is stored under %s", n.Name, clip(strconv.Quote(l.node)))
	}
	return nil
}

// checkEndpoint refuses an endpoint that would make the agent route or
// police something that is not a workload of ours: another host's record
// stored under this host, an interface that is not a cali* veth (eth0 would
// send workload routes out of the host's own NIC), or an address that is
// not a single unicast address inside a pool (a host's or router's address
// would be hijacked, locally and over BGP).
func checkEndpoint(s *calc.Snapshot, ep api.Endpoint, l loc) error {
	if ep.Node != l.node || ep.Workload != l.name {
		return fmt.Errorf("endpoint names %s/%s but is stored under %s/%s",
			clip(strconv.Quote(ep.Node)), clip(strconv.Quote(ep.Workload)), clip(l.node), clip(l.name))
	}
	if err := api.ValidateName("node", ep.Node); err != nil {
		return err
	}
	if ep.InterfaceName != "" && !isWorkloadIface(ep.InterfaceName) {
		return fmt.Errorf("interface %s is not a workload interface (want cali followed by up to 11 letters or digits)", clip(strconv.Quote(ep.InterfaceName)))
	}
	for _, p := range ep.Profiles {
		if err := api.ValidateName("profile", p); err != nil {
			return err
		}
	}
	pools := poolPrefixes(s)
	for _, fam := range []struct {
		nets []string
		is4  bool
	}{{ep.IPv4Nets, true}, {ep.IPv6Nets, false}} {
		for _, n := range fam.nets {
			a, err := hostAddr(n)
			if err != nil {
				return err
			}
			if a.Is4() != fam.is4 {
				return fmt.Errorf("address %s is listed with the wrong family", a)
			}
			if _, err := api.ParseWorkloadIP(a.String()); err != nil {
				return err
			}
			if !inAnyPool(pools, netip.PrefixFrom(a, a.BitLen())) {
				return fmt.Errorf("address %s is outside every pool", a)
			}
		}
	}
	return nil
}

// hostAddr reads an endpoint address: "IP" or "IP/32" ("IP/128").
func hostAddr(n string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(n); err == nil {
		if p.Bits() != p.Addr().BitLen() {
			return netip.Addr{}, fmt.Errorf("address %s is not a single address", p)
		}
		return p.Addr(), nil
	}
	a, err := netip.ParseAddr(n)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("bad address %s", clip(strconv.Quote(n)))
	}
	return a, nil
}

// isWorkloadIface accepts the host-side veth names clients make: "cali"
// and 1-11 letters or digits (Linux allows 15 characters).
func isWorkloadIface(name string) bool {
	rest, ok := strings.CutPrefix(name, "cali")
	if !ok || len(rest) == 0 || len(rest) > 11 {
		return false
	}
	for _, c := range []byte(rest) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// maxBlockHostBits matches IPAM's largest block (65536 addresses): a larger
// "block" would make the owning host blackhole a huge range.
const maxBlockHostBits = 16

// checkBlock refuses a block that is not a masked prefix of a sane size
// inside a pool, or whose key disagrees with it: the owning host installs a
// blackhole route for it and announces it over BGP.
func checkBlock(s *calc.Snapshot, b api.Block, l loc) error {
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || p.Masked() != p || p.Addr().Zone() != "" {
		return fmt.Errorf("bad block CIDR %s", clip(strconv.Quote(b.CIDR)))
	}
	if p.String() != l.name {
		return fmt.Errorf("block %s is stored under %s", p, clip(strconv.Quote(l.name)))
	}
	if p.Addr().BitLen()-p.Bits() > maxBlockHostBits {
		return fmt.Errorf("block %s is larger than %d addresses", p, 1<<maxBlockHostBits)
	}
	if b.Affinity != "" {
		if err := api.ValidateName("node", b.Affinity); err != nil {
			return err
		}
	}
	if !inAnyPool(poolPrefixes(s), p) {
		return fmt.Errorf("block %s is outside every pool", p)
	}
	return nil
}

func poolPrefixes(s *calc.Snapshot) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(s.Pools))
	for _, p := range s.Pools {
		if c, err := netip.ParsePrefix(p.CIDR); err == nil {
			out = append(out, c.Masked())
		}
	}
	return out
}

func inAnyPool(pools []netip.Prefix, p netip.Prefix) bool {
	for _, pool := range pools {
		if pool.Bits() <= p.Bits() && pool.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// clip keeps a hostile key or value from turning one log line into a megabyte.
func clip(s string) string {
	const max = 120
	if len(s) <= max {
		return s
	}
	return s[:max] + fmt.Sprintf("...(%d bytes)", len(s))
}
