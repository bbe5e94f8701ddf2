package node

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/calico-go/calico/internal/calc"
	"github.com/calico-go/calico/internal/datastore"
)

// decodeInto applies one datastore record to a snapshot. It reports whether
// the key matters to the calculation at all (status records, claims and
// handles do not), and an error for a record that does not decode; the
// caller then keeps what it had, so one bad record never tears down traffic.
func decodeInto(s *calc.Snapshot, key string, value []byte) (relevant bool, err error) {
	deleted := value == nil
	rest, ok := strings.CutPrefix(key, datastore.Root)
	if !ok {
		return false, nil
	}
	set := func(target any, apply func()) error {
		if deleted {
			apply()
			return nil
		}
		if err := json.Unmarshal(value, target); err != nil {
			return fmt.Errorf("record %s does not decode: %v", key, err)
		}
		apply()
		return nil
	}
	parts := strings.Split(rest, "/")
	switch {
	case rest == "config/bgp":
		v := s.BGP
		return true, set(&v, func() {
			if deleted {
				s.BGP = defaultBGP()
			} else {
				s.BGP = v
			}
		})
	case len(parts) == 3 && parts[0] == "bgp" && parts[1] == "peer":
		return true, setMap(s.GlobalPeers, parts[2], value, key)
	case len(parts) == 2 && parts[0] == "pool":
		return true, setMap(s.Pools, datastore.UnescapeCIDR(parts[1]), value, key)
	case len(parts) == 2 && parts[0] == "profile":
		return true, setMap(s.Profiles, parts[1], value, key)
	case len(parts) == 3 && parts[0] == "host" && parts[2] == "node":
		return true, setMap(s.Nodes, parts[1], value, key)
	case len(parts) == 4 && parts[0] == "host" && parts[2] == "endpoint":
		return true, setMap(s.Endpoints, parts[1]+"/"+parts[3], value, key)
	case len(parts) == 5 && parts[0] == "host" && parts[2] == "bgp" && parts[3] == "peer":
		return true, setMap(s.NodePeers, parts[1]+"/"+parts[4], value, key)
	case len(parts) == 3 && parts[0] == "ipam" && parts[1] == "block":
		return true, setMap(s.Blocks, datastore.UnescapeCIDR(parts[2]), value, key)
	}
	return false, nil
}

// setMap decodes value into m[id], or deletes m[id] when value is nil.
func setMap[V any](m map[string]V, id string, value []byte, key string) error {
	if value == nil {
		delete(m, id)
		return nil
	}
	var v V
	if err := json.Unmarshal(value, &v); err != nil {
		return fmt.Errorf("record %s does not decode: %v", key, err)
	}
	m[id] = v
	return nil
}
