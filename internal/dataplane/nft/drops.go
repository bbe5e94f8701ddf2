package nft

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/calico-go/calico/internal/calc"
)

// Policy drops are visible. Every drop a profile decides (a deny rule, or a
// rule enforced as drop) and every endpoint chain's final drop (no profile
// allowed the packet) carries an anonymous counter and logs the packet's
// headers to the NFLOG group DropLogGroup, with a prefix naming the chain
// and the rule:
//
//	counter log prefix "calico-drop:prof-in-web-1a2b3c4d5e:2" group 3233 snaplen 128 drop
//
// Rule numbers are the profile's own (1-based, as `calicoctl profile NAME
// rule show` numbers them); 0 is an endpoint chain's final drop. The
// counters feed the agent's per-profile drop metrics (DropCounter); the log
// feeds `calicoctl flows`. A log group nobody listens on costs the kernel a
// lookup per dropped packet.

// DropLogGroup is the NFLOG group our drop rules log to.
const DropLogGroup = 3233

// DropSnapLen is how much of a dropped packet is logged: the IP and
// transport headers, never the payload.
const DropSnapLen = 128

const dropPrefix = "calico-drop:"

// dropStatement is what a drop rule of chain ends with; rule is the
// profile rule's number (0: the endpoint chain's final drop).
func dropStatement(chain string, rule int) string {
	return `counter log prefix "` + DropPrefix(chain, rule) + dropSuffix
}

// dropSuffix ends every drop statement (concatenated, not formatted: render
// writes one per endpoint and direction on every Apply).
var dropSuffix = fmt.Sprintf(`" group %d snaplen %d drop`, DropLogGroup, DropSnapLen)

// DropPrefix is the log prefix of rule (0: the final drop) of chain, a key
// of DropNames.
func DropPrefix(chain string, rule int) string {
	return dropPrefix + chain + ":" + strconv.Itoa(rule)
}

// DropSource is what decided a drop.
type DropSource struct {
	// Direction is inbound (to the workload) or outbound (from it).
	Direction string
	// Profile is the profile whose rule denied the packet. For a final
	// drop (Rule 0) it is empty: no profile of Endpoint allowed the packet.
	Profile string
	// Rule is the profile rule's number, 1-based; 0 for a final drop.
	Rule int
	// Endpoint is the workload interface of a final drop in its own chain.
	Endpoint string
	// Profiles are the profiles (comma-separated) of a final drop in the
	// chains of a profile list that endpoints share (by device group):
	// none of them allowed the packet.
	Profiles string
	// Policy is the label policy whose Deny rule (Rule, 1-based among the
	// direction's rules) dropped the packet.
	Policy string
	// EndOfTier: label policies applied to Endpoint in Direction and none
	// decided (Rule 0).
	EndOfTier bool
}

// endOfTier names an endpoint's end-of-tier drop in DropNames and in its
// log prefix. It is not a chain: the drop is the last rule of the
// endpoint's chain, whose own name already stands for its profiles' final
// drop once policies move the profiles to a second stage.
func endOfTier(iface string, ingress bool) string {
	if ingress {
		return "tier-" + endpointInChain(iface)
	}
	return "tier-" + endpointOutChain(iface)
}

// DropNames maps the log prefixes and counters of a rendered policy back
// to what they mean.
type DropNames map[string]DropSource // chain -> source without Rule

// NewDropNames names the drop rules of p's chains.
func NewDropNames(p calc.Policy) DropNames {
	d := DropNames{}
	for name := range p.Profiles {
		d[profileInChain(name)] = DropSource{Direction: "inbound", Profile: name}
		d[profileOutChain(name)] = DropSource{Direction: "outbound", Profile: name}
	}
	for name := range p.Policies {
		d[policyInChain(name)] = DropSource{Direction: "inbound", Policy: name}
		d[policyOutChain(name)] = DropSource{Direction: "outbound", Policy: name}
	}
	for _, ep := range p.Endpoints {
		if ep.Group != 0 {
			list := strings.Join(ep.Profiles, ",")
			d[groupInChain(ep.Group)] = DropSource{Direction: "inbound", Profiles: list}
			d[groupOutChain(ep.Group)] = DropSource{Direction: "outbound", Profiles: list}
		}
		d[endpointInChain(ep.Interface)] = DropSource{Direction: "inbound", Endpoint: ep.Interface}
		d[endpointOutChain(ep.Interface)] = DropSource{Direction: "outbound", Endpoint: ep.Interface}
		if len(ep.IngressPolicies) > 0 {
			d[endOfTier(ep.Interface, true)] = DropSource{Direction: "inbound", Endpoint: ep.Interface, EndOfTier: true}
		}
		if len(ep.EgressPolicies) > 0 {
			d[endOfTier(ep.Interface, false)] = DropSource{Direction: "outbound", Endpoint: ep.Interface, EndOfTier: true}
		}
	}
	return d
}

// Source reads a drop rule's log prefix (false: not one of ours, or a chain
// p does not have).
func (d DropNames) Source(prefix string) (DropSource, bool) {
	chain, rule, ok := parseDropPrefix(prefix)
	if !ok {
		return DropSource{}, false
	}
	s, ok := d[chain]
	s.Rule = rule
	return s, ok
}

func parseDropPrefix(prefix string) (chain string, rule int, ok bool) {
	rest, ok := strings.CutPrefix(prefix, dropPrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return rest[:i], n, true
}

// Count is packets and bytes.
type Count struct{ Packets, Bytes uint64 }

// DropCounter reads what the drop rules' counters grew by. A rule the
// kernel rewrites (an incremental update of its chain, the periodic full
// rewrite) comes back with a new handle and a counter at zero, so Poll
// tracks each rule by its handle. Only what a rule dropped between the
// last Poll and its rewrite is lost; the agent polls before every Apply
// and at every scrape.
type DropCounter struct {
	mu   sync.Mutex
	last map[ruleID]Count // each drop rule's counter as last read
}

// ruleID is one nft rule: a profile rule can render as two (IPv4 and IPv6)
// with the same prefix.
type ruleID struct {
	prefix string
	handle uint64
}

// NewDropCounter starts with nothing counted.
func NewDropCounter() *DropCounter {
	return &DropCounter{last: map[ruleID]Count{}}
}

// Poll reads the counters of our table's drop rules and returns what
// they grew by since the last Poll, by log prefix (see DropNames.Source).
// The caller names them at once: the policy in force is the one that
// dropped the packets.
func (c *DropCounter) Poll(ctx context.Context) (map[string]Count, error) {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nft", "-j", "list", "table", "inet", TableName).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("nftables: reading the drop counters of table %s: %w", TableName, err)
	}
	now, err := parseDropCounters(out)
	if err != nil {
		return nil, err
	}
	return c.grown(now), nil
}

// grown is what each prefix's counters grew by since the last read.
func (c *DropCounter) grown(now map[ruleID]Count) map[string]Count {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]Count{}
	for id, cur := range now {
		prev := c.last[id] // zero for a rule not seen before
		if cur.Packets < prev.Packets || cur.Bytes < prev.Bytes {
			prev = Count{} // reset by hand (nft reset counters)
		}
		if cur == prev {
			continue
		}
		d := out[id.prefix]
		d.Packets += cur.Packets - prev.Packets
		d.Bytes += cur.Bytes - prev.Bytes
		out[id.prefix] = d
	}
	c.last = now // rules gone from the table are forgotten
	return out
}

// parseDropCounters picks our drop rules' counters out of `nft -j list
// table`: a rule's expressions hold {"counter": {...}} and then {"log":
// {"prefix": ...}}.
func parseDropCounters(js []byte) (map[ruleID]Count, error) {
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Handle uint64                       `json:"handle"`
				Expr   []map[string]json.RawMessage `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("nftables: reading the drop counters: %w", err)
	}
	out := map[ruleID]Count{}
	for _, o := range doc.Nftables {
		if o.Rule == nil {
			continue
		}
		var cnt *Count
		for _, e := range o.Rule.Expr {
			if raw, ok := e["counter"]; ok {
				var v struct{ Packets, Bytes uint64 }
				if json.Unmarshal(raw, &v) == nil {
					cnt = &Count{v.Packets, v.Bytes}
				}
			}
			if raw, ok := e["log"]; ok && cnt != nil {
				var v struct{ Prefix string }
				if json.Unmarshal(raw, &v) == nil && strings.HasPrefix(v.Prefix, dropPrefix) {
					out[ruleID{v.Prefix, o.Rule.Handle}] = *cnt
				}
			}
		}
	}
	return out, nil
}
