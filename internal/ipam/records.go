package ipam

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-go/calico/internal/api"
	"github.com/calico-go/calico/internal/datastore"
)

// The record types below are what this package reads from etcd, decoded but
// with their key and ModRevision kept: every write is conditional on the
// revision it read. Decoding is pure so the checks can be tested without etcd.

// storedBlock is one block key.
type storedBlock struct {
	key string
	rev int64
	st  *blockState // nil when err != nil
	err error
}

func parseBlockKV(key string, value []byte, rev int64) storedBlock {
	sb := storedBlock{key: key, rev: rev}
	sb.st, sb.err = decodeBlock(value)
	if sb.err != nil {
		sb.err = fmt.Errorf("block key %s: %v", key, sb.err)
	}
	return sb
}

// storedHandle is one handle key; rev 0 means the key does not exist, so a
// write creating it is guarded by CreateRevision == 0.
type storedHandle struct {
	key string
	rev int64
	h   api.Handle
	err error
}

func parseHandleKV(key string, value []byte, rev int64) storedHandle {
	sh := storedHandle{key: key, rev: rev}
	if err := json.Unmarshal(value, &sh.h); err != nil {
		sh.err = fmt.Errorf("handle key %s: bad JSON: %v", key, err)
	}
	return sh
}

// withIP returns the handle record with ip added.
func (sh storedHandle) withIP(id string, ip netip.Addr) api.Handle {
	h := api.Handle{ID: id, IPs: slices.Clone(sh.h.IPs)}
	if sh.rev == 0 || sh.err != nil {
		h.IPs = nil
	}
	s := ip.String()
	if !slices.Contains(h.IPs, s) {
		h.IPs = append(h.IPs, s)
	}
	return h
}

// withoutIPs returns the handle record minus ips.
func (sh storedHandle) withoutIPs(ips ...netip.Addr) api.Handle {
	h := api.Handle{ID: sh.h.ID, IPs: nil}
	for _, s := range sh.h.IPs {
		a, err := netip.ParseAddr(s)
		if err == nil && slices.Contains(ips, a) {
			continue
		}
		h.IPs = append(h.IPs, s)
	}
	return h
}

// claim is one affinity key: node claims the block cidr.
type claim struct {
	key   string
	node  string
	cidr  string // from the key
	value string // the block CIDR stored as the value; should equal cidr
	rev   int64
}

func parseClaimKV(key string, value []byte, rev int64) claim {
	c := claim{key: key, value: string(value), rev: rev}
	rest := strings.TrimPrefix(key, datastore.PrefixAffinities)
	node, seg, _ := strings.Cut(rest, "/")
	c.node, c.cidr = node, datastore.UnescapeCIDR(seg)
	return c
}

// snapshot is the whole IPAM state at one etcd revision.
type snapshot struct {
	pools   []poolInfo
	blocks  []storedBlock
	handles []storedHandle
	claims  []claim
}

// sortBlocks orders blocks by address, undecodable ones last by key, so
// listings and reports are stable.
func sortBlocks(bs []storedBlock) {
	slices.SortFunc(bs, func(a, b storedBlock) int {
		switch {
		case a.st != nil && b.st != nil:
			return comparePrefix(a.st.prefix, b.st.prefix)
		case a.st != nil:
			return -1
		case b.st != nil:
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
}

// handleFrom decodes a handle read by a single-key get.
func handleFrom(key string, kvs []kv) (storedHandle, error) {
	if len(kvs) == 0 {
		return storedHandle{key: key}, nil
	}
	h := parseHandleKV(key, kvs[0].value, kvs[0].rev)
	if h.err != nil {
		return h, errorf(ErrCorrupt, "%v", h.err)
	}
	return h, nil
}

func parsePools(kvs []kv) []poolInfo {
	out := make([]poolInfo, 0, len(kvs))
	for _, e := range kvs {
		out = append(out, parsePool(e.key, e.value, e.rev))
	}
	slices.SortFunc(out, func(a, b poolInfo) int { return strings.Compare(a.String(), b.String()) })
	return out
}
