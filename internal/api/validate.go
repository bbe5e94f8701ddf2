package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MaxNameLen matches the longest DNS name, so host names always fit.
const MaxNameLen = 253

// Default block sizes: a /26 is 64 addresses, enough for a busy host
// without wasting a large pool on idle ones.
const (
	DefaultBlockSizeV4 = 26
	DefaultBlockSizeV6 = 122
)

// maxQuoted keeps error lines readable when the bad value is huge.
const maxQuoted = 64

// quote is %q that cuts very long values, so one bad input gives one line.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + "..."
}

// ParseCIDR reads a network prefix such as 10.0.0.0/8. It is strict: the
// address must be the network address, because "10.0.0.1/8" is usually a
// typo and silently masking it would hide the mistake.
func ParseCIDR(s string) (netip.Prefix, error) {
	addrPart, bitsPart, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %s: %s", quote(s), missingPrefixReason(s))
	}
	addr, err := parseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %s: %w", quote(s), err)
	}
	bits, err := parseBits(bitsPart, addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %s: %w", quote(s), err)
	}
	p := netip.PrefixFrom(addr, bits)
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("bad CIDR %s: host bits set; did you mean %s?", quote(s), m)
	}
	return p, nil
}

func missingPrefixReason(s string) string {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return fmt.Sprintf("missing prefix length; did you mean %s/%d?", a, a.BitLen())
	}
	return "want address/prefix-length, e.g. 10.0.0.0/8"
}

// parseAddr is netip.ParseAddr without the forms that cause trouble in
// routes and rules: zones, and IPv4-mapped IPv6 that would hide an IPv4
// address in an IPv6 table.
func parseAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("missing IP address")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errors.New(addrReason(s, err))
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zone %s not allowed", quote(a.Zone()))
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("IPv4-mapped IPv6 address; write it as %s", a.Unmap())
	}
	return a, nil
}

// addrReason drops netip's `ParseAddr("...")` prefix, since our message
// already quotes the whole input.
func addrReason(s string, err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "ParseAddr("+strconv.Quote(s)+"): ")
	if strings.Contains(msg, ">255") {
		return "IP address out of range"
	}
	return msg
}

// parseBits accepts only canonical decimal so that every accepted prefix
// prints back as it was written.
func parseBits(s string, addr netip.Addr) (int, error) {
	if s == "" {
		return 0, errors.New("missing prefix length after '/'")
	}
	max := addr.BitLen()
	if !isDigits(s) || (len(s) > 1 && s[0] == '0') || len(s) > 3 {
		return 0, fmt.Errorf("bad prefix length %s: want 0-%d", quote(s), max)
	}
	n, _ := strconv.Atoi(s)
	if n > max {
		return 0, fmt.Errorf("prefix length /%d too long for %s (max %d)", n, family(addr), max)
	}
	return n, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

type reservedRange struct {
	name   string
	prefix netip.Prefix
}

// reservedRanges cannot carry workload traffic between hosts: the kernel
// treats them specially or they are not unicast.
var reservedRanges = []reservedRange{
	{"unspecified", netip.MustParsePrefix("0.0.0.0/8")},
	{"loopback", netip.MustParsePrefix("127.0.0.0/8")},
	{"link-local", netip.MustParsePrefix("169.254.0.0/16")},
	{"multicast", netip.MustParsePrefix("224.0.0.0/4")},
	{"broadcast", netip.MustParsePrefix("255.255.255.255/32")},
	{"unspecified", netip.MustParsePrefix("::/128")},
	{"loopback", netip.MustParsePrefix("::1/128")},
	{"link-local", netip.MustParsePrefix("fe80::/10")},
	{"multicast", netip.MustParsePrefix("ff00::/8")},
}

// ValidatePoolCIDR parses a pool's CIDR and rejects ranges that workloads
// cannot use. Any pool that overlaps a reserved range is rejected, not just
// one inside it, because IPAM would hand out the reserved addresses.
func ValidatePoolCIDR(s string) (netip.Prefix, error) {
	p, err := ParseCIDR(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("bad pool CIDR %s: a default route is not a pool; use a private range such as 192.168.0.0/16 or fd00::/48", quote(s))
	}
	for _, r := range reservedRanges {
		if r.prefix.Overlaps(p) {
			return netip.Prefix{}, fmt.Errorf("bad pool CIDR %s: overlaps the %s range %s", quote(s), r.name, r.prefix)
		}
	}
	return p, nil
}

// DefaultBlockSize is the block prefix length for a pool: the usual /26
// (/122), or the pool itself when it is smaller than one block.
func DefaultBlockSize(p netip.Prefix) int {
	if p.Addr().Is4() {
		return max(DefaultBlockSizeV4, p.Bits())
	}
	return max(DefaultBlockSizeV6, p.Bits())
}

// ValidatePool checks a pool before it is stored. existing is the current
// pool list; a pool with the same CIDR is the one being overridden (the
// seed re-runs `pool add` to change options), so only other overlaps count.
func ValidatePool(p Pool, existing []Pool) error {
	prefix, err := ValidatePoolCIDR(p.CIDR)
	if err != nil {
		return err
	}
	if err := validateBlockSize(prefix, p.BlockSize); err != nil {
		return err
	}
	if err := validateEncap(prefix, p.IPIPMode, p.VXLANMode); err != nil {
		return err
	}
	return checkPoolOverlap(prefix, existing)
}

// validateBlockSize allows 0 to mean "use DefaultBlockSize".
func validateBlockSize(prefix netip.Prefix, size int) error {
	if size == 0 {
		return nil
	}
	lo, hi := prefix.Bits(), prefix.Addr().BitLen()
	if size < lo || size > hi {
		return fmt.Errorf("pool %s: bad block size %d: want %d-%d (default %d)", prefix, size, lo, hi, DefaultBlockSize(prefix))
	}
	return nil
}

func validateEncap(prefix netip.Prefix, ipipMode, vxlanMode EncapMode) error {
	ipip, err := checkMode(prefix, "IPIP", ipipMode)
	if err != nil {
		return err
	}
	vxlan, err := checkMode(prefix, "VXLAN", vxlanMode)
	if err != nil {
		return err
	}
	if ipip != EncapNever && vxlan != EncapNever {
		return fmt.Errorf("pool %s: IPIP mode %s and VXLAN mode %s both set; choose one encapsulation", prefix, ipip, vxlan)
	}
	if ipip != EncapNever && prefix.Addr().Is6() {
		return fmt.Errorf("pool %s: IPIP mode %s on an IPv6 pool; IPIP carries IPv4 only, use VXLAN or Never", prefix, ipip)
	}
	return nil
}

// checkMode is strict about spelling because stored values are compared
// as strings by every reader; ParseEncapMode is the lenient user-facing one.
func checkMode(prefix netip.Prefix, which string, m EncapMode) (EncapMode, error) {
	switch m {
	case "", EncapNever:
		return EncapNever, nil
	case EncapAlways, EncapCrossSubnet:
		return m, nil
	}
	return "", fmt.Errorf("pool %s: bad %s mode %s: use Never, Always or CrossSubnet", prefix, which, quote(string(m)))
}

func checkPoolOverlap(prefix netip.Prefix, existing []Pool) error {
	for _, e := range existing {
		// Stored pools were validated on write; one that no longer parses
		// says nothing about this pool.
		other, err := netip.ParsePrefix(e.CIDR)
		if err != nil {
			continue
		}
		other = other.Masked()
		if other != prefix && other.Overlaps(prefix) {
			return fmt.Errorf("pool %s overlaps existing pool %s", prefix, other)
		}
	}
	return nil
}

// ParseEncapMode reads the user's spelling of a mode (flags, config).
func ParseEncapMode(s string) (EncapMode, error) {
	switch strings.ToLower(s) {
	case "always":
		return EncapAlways, nil
	case "crosssubnet", "cross-subnet":
		return EncapCrossSubnet, nil
	case "never":
		return EncapNever, nil
	}
	return "", fmt.Errorf("bad encapsulation mode %s: use always, cross-subnet or never", quote(s))
}

// ValidateName checks a profile, tag, node or workload name. Names become
// datastore key segments and iptables/ipset name parts, hence the small
// alphabet and never '/'.
func ValidateName(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("bad %s name \"\": must not be empty", kind)
	case len(s) > MaxNameLen:
		return fmt.Errorf("bad %s name %s: %d characters, at most %d", kind, quote(s), len(s), MaxNameLen)
	case !isAlnum(s[0]):
		return fmt.Errorf("bad %s name %s: must start with a letter or digit", kind, quote(s))
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune("_.:-", rune(c)) {
			return fmt.Errorf("bad %s name %s: use letters, digits, '_', '-', '.', ':'", kind, quote(s))
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ParseASNumber reads a 4-byte AS number, plain ("64512") or asdot
// ("1.10" = 1*65536+10). AS 0 is reserved (RFC 7607).
func ParseASNumber(s string) (uint32, error) {
	var n uint64
	if hi, lo, dotted := strings.Cut(s, "."); dotted {
		h, errH := strconv.ParseUint(hi, 10, 16)
		l, errL := strconv.ParseUint(lo, 10, 16)
		if errH != nil || errL != nil {
			return 0, fmt.Errorf("bad AS number %s: asdot form is two numbers 0-65535, e.g. 1.10", quote(s))
		}
		n = h<<16 | l
	} else {
		var err error
		if n, err = strconv.ParseUint(s, 10, 32); err != nil {
			return 0, fmt.Errorf("bad AS number %s: use 1-4294967295 or asdot form such as 1.10", quote(s))
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("bad AS number %s: AS 0 is reserved; use 1-4294967295", quote(s))
	}
	return uint32(n), nil
}

// ParseWorkloadIP reads an address to give a workload.
func ParseWorkloadIP(s string) (netip.Addr, error) {
	return parseHostIP("workload IP", s)
}

// parseHostIP reads a single unicast address that can be routed between
// hosts; what names the use in errors.
func parseHostIP(what, s string) (netip.Addr, error) {
	if addr, _, ok := strings.Cut(s, "/"); ok {
		return netip.Addr{}, fmt.Errorf("bad %s %s: want an address without a prefix length, e.g. %s", what, quote(s), quote(addr))
	}
	a, err := parseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("bad %s %s: %w", what, quote(s), err)
	}
	if reason := unusableReason(a); reason != "" {
		return netip.Addr{}, fmt.Errorf("bad %s %s: %s", what, quote(s), reason)
	}
	return a, nil
}

// unusableReason says why a cannot be a host or workload address, or "".
func unusableReason(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address is not a host address"
	case a.IsLoopback():
		return "a loopback address never leaves the host"
	case a.IsMulticast():
		return "a multicast address is not a host address"
	case a.IsLinkLocalUnicast():
		return "a link-local address is not routed between hosts"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address is not a host address"
	}
	return ""
}

// ParseNodeAddr reads a host address with its subnet prefix, such as
// 10.0.0.1/24; the prefix is what lets CrossSubnet see shared subnets.
// Host bits are expected, so the result is not masked.
func ParseNodeAddr(s string) (netip.Prefix, error) {
	p, err := parseNodeAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad node address %s: %w", quote(s), err)
	}
	return p, nil
}

func parseNodeAddr(s string) (netip.Prefix, error) {
	addrPart, bitsPart, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, errors.New("want an address with its subnet prefix, e.g. 10.0.0.1/24")
	}
	a, err := parseAddr(addrPart)
	if err != nil {
		return netip.Prefix{}, err
	}
	bits, err := parseBits(bitsPart, a)
	if err != nil {
		return netip.Prefix{}, err
	}
	if bits == 0 {
		return netip.Prefix{}, errors.New("prefix length /0 is not a subnet")
	}
	if reason := unusableReason(a); reason != "" {
		return netip.Prefix{}, errors.New(reason)
	}
	return netip.PrefixFrom(a, bits), nil
}

// ValidateNode checks a node record. ASNumber 0 means the global default.
func ValidateNode(n Node) error {
	if err := ValidateName("node", n.Name); err != nil {
		return err
	}
	if err := checkNodeAddr(n.Name, "IPv4", n.IPv4, true); err != nil {
		return err
	}
	if k := n.WireGuardPublicKey; k != "" {
		if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) != 32 {
			return fmt.Errorf("node %s: bad WireGuard public key %s: want 32 bytes in base64", n.Name, quote(k))
		}
	}
	if n.ClusterID != "" {
		if !n.RouteReflector {
			return fmt.Errorf("node %s: a cluster ID is for a route reflector; add --route-reflector or drop --cluster-id", n.Name)
		}
		if err := ValidateClusterID(n.ClusterID); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return checkNodeAddr(n.Name, "IPv6", n.IPv6, false)
}

// ValidateClusterID checks a route reflector cluster ID: an IPv4 address,
// the form GoBGP and BIRD take it in.
func ValidateClusterID(id string) error {
	if a, err := netip.ParseAddr(id); err != nil || !a.Is4() {
		return fmt.Errorf("cluster ID %q: want an IPv4 address, such as 1.0.0.1", id)
	}
	return nil
}

// NodeAddrs returns a node record's addresses without their subnet prefix;
// a field that is empty or does not parse gives the zero Addr (records read
// back from the datastore were validated on write; an address without a
// prefix length is taken as it is).
func NodeAddrs(n Node) (v4, v6 netip.Addr) {
	return nodeAddr(n.IPv4), nodeAddr(n.IPv6)
}

func nodeAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{} // no error value to make: this runs per node per agent pass
	}
	if strings.Contains(s, "/") {
		p, _ := netip.ParsePrefix(s)
		return p.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(s)
	return a.Unmap()
}

// PoolOverNode says which node address a pool contains, if any: the first
// node by name, then IPv4 before IPv6. Such a pool would let IPAM give a
// host's address to a workload, whose host then takes the host's traffic
// (locally and over BGP).
func PoolOverNode(pool netip.Prefix, nodes []Node) (node string, addr netip.Addr, found bool) {
	for _, n := range nodes {
		v4, v6 := NodeAddrs(n)
		for _, a := range [2]netip.Addr{v4, v6} {
			if a.IsValid() && pool.Contains(a) && (!found || n.Name < node) {
				node, addr, found = n.Name, a, true
			}
		}
	}
	return node, addr, found
}

// CheckPoolNodes refuses a pool that contains a registered node's address.
func CheckPoolNodes(pool netip.Prefix, nodes []Node) error {
	if node, a, found := PoolOverNode(pool, nodes); found {
		return fmt.Errorf("pool %s contains node %s's address %s: a workload given that address would take over the host's traffic; choose a range no host uses", pool, node, a)
	}
	return nil
}

// CheckNodeInPools refuses a node address inside a pool, for the same
// reason as CheckPoolNodes.
func CheckNodeInPools(node string, addr netip.Addr, pools []Pool) error {
	for _, p := range pools {
		c, err := netip.ParsePrefix(p.CIDR)
		if err == nil && c.Masked().Contains(addr.Unmap()) {
			return fmt.Errorf("node %s: address %s is inside pool %s, whose addresses go to workloads; give the node an address outside every pool, or remove the pool with `calicoctl pool remove %s`", node, addr, c.Masked(), c.Masked())
		}
	}
	return nil
}

func checkNodeAddr(node, field, s string, want4 bool) error {
	if s == "" {
		return nil
	}
	p, err := parseNodeAddr(s)
	if err != nil {
		return fmt.Errorf("node %s: bad %s %s: %w", node, field, quote(s), err)
	}
	if p.Addr().Is4() != want4 {
		return fmt.Errorf("node %s: bad %s %s: that is an %s address", node, field, quote(s), family(p.Addr()))
	}
	return nil
}

// ValidateBGPPeer checks a configured peer; Node "" makes it global.
func ValidateBGPPeer(p BGPPeer) error {
	if _, err := parseHostIP("BGP peer IP", p.IP); err != nil {
		return err
	}
	if p.ASNumber == 0 {
		return fmt.Errorf("BGP peer %s: missing AS number; AS 0 is reserved", p.IP)
	}
	if p.MaxPrefixes < 0 || p.MaxPrefixes > MaxMaxPrefixes {
		return fmt.Errorf("BGP peer %s: max prefixes %d: must be 1 to %d (0 or absent: %d)", p.IP, p.MaxPrefixes, MaxMaxPrefixes, DefaultMaxPrefixes)
	}
	if p.Node == "" {
		return nil
	}
	if err := ValidateName("node", p.Node); err != nil {
		return fmt.Errorf("BGP peer %s: %w", p.IP, err)
	}
	return nil
}

// ValidateProfile checks a whole profile, naming the rule that is wrong by
// its 1-based position, the same number `rule add --at` uses.
func ValidateProfile(p Profile) error {
	if err := ValidateName("profile", p.Name); err != nil {
		return err
	}
	if err := validateTags(p.Name, p.Tags); err != nil {
		return err
	}
	if err := validateRuleList(p.Name, "inbound", p.Inbound); err != nil {
		return err
	}
	return validateRuleList(p.Name, "outbound", p.Outbound)
}

// validateTags rejects duplicates: tags are a set, and a repeat usually
// means a client added one without checking.
func validateTags(profile string, tags []string) error {
	seen := make(map[string]bool, len(tags))
	for _, t := range tags {
		if err := ValidateName("tag", t); err != nil {
			return fmt.Errorf("profile %s: %w", profile, err)
		}
		if seen[t] {
			return fmt.Errorf("profile %s: tag %s listed twice", profile, quote(t))
		}
		seen[t] = true
	}
	return nil
}

func validateRuleList(profile, dir string, rules []Rule) error {
	for i, r := range rules {
		if err := validateRule(r); err != nil {
			return fmt.Errorf("profile %s: %s rule %d: %w", profile, dir, i+1, err)
		}
	}
	return nil
}

// String prints a port range the way the rule grammar reads it.
func (r PortRange) String() string {
	if r.Min == r.Max {
		return strconv.Itoa(int(r.Min))
	}
	return strconv.Itoa(int(r.Min)) + ":" + strconv.Itoa(int(r.Max))
}

// Rule protocols.
const (
	ProtocolTCP    = "tcp"
	ProtocolUDP    = "udp"
	ProtocolICMP   = "icmp"
	ProtocolICMPv6 = "icmpv6"
)

// ValidateRule checks one rule as it arrives from JSON; the rule grammar
// parser runs the same checks, so both paths accept the same rules.
func ValidateRule(r Rule) error {
	if err := validateRule(r); err != nil {
		return fmt.Errorf("rule: %w", err)
	}
	return nil
}

func validateRule(r Rule) error {
	if r.Action != ActionAllow && r.Action != ActionDeny {
		return fmt.Errorf("bad action %s: use allow or deny", quote(r.Action))
	}
	if err := validateProtocol(r); err != nil {
		return err
	}
	src, err := validateEntity("from", r.Protocol, r.Src)
	if err != nil {
		return err
	}
	dst, err := validateEntity("to", r.Protocol, r.Dst)
	if err != nil {
		return err
	}
	return checkRuleFamilies(r.Protocol, src, dst)
}

func validateProtocol(r Rule) error {
	switch r.Protocol {
	case "", ProtocolTCP, ProtocolUDP, ProtocolICMP, ProtocolICMPv6:
	default:
		return fmt.Errorf("bad protocol %s: use tcp, udp, icmp or icmpv6", quote(r.Protocol))
	}
	isICMP := r.Protocol == ProtocolICMP || r.Protocol == ProtocolICMPv6
	if r.ICMPType != nil {
		if !isICMP {
			return fmt.Errorf("icmp type %d needs protocol icmp or icmpv6%s", *r.ICMPType, notProtocol(r.Protocol))
		}
		if err := checkICMPField("type", *r.ICMPType); err != nil {
			return err
		}
	}
	if r.ICMPCode != nil {
		if r.ICMPType == nil {
			return fmt.Errorf("icmp code %d needs an icmp type, e.g. icmp type 3 code %d", *r.ICMPCode, *r.ICMPCode)
		}
		return checkICMPField("code", *r.ICMPCode)
	}
	return nil
}

func notProtocol(protocol string) string {
	if protocol == "" {
		return ""
	}
	return ", not " + protocol
}

func checkICMPField(name string, v int) error {
	if v < 0 || v > 255 {
		return fmt.Errorf("bad icmp %s %d: want 0-255", name, v)
	}
	return nil
}

// validateEntity returns the parsed CIDR (zero if none) for family checks.
func validateEntity(side, protocol string, e EntityMatch) (netip.Prefix, error) {
	if e.Tag != "" {
		if err := ValidateName("tag", e.Tag); err != nil {
			return netip.Prefix{}, err
		}
	}
	if err := validatePorts(side, protocol, e.Ports); err != nil {
		return netip.Prefix{}, err
	}
	if e.CIDR == "" {
		return netip.Prefix{}, nil
	}
	return ParseCIDR(e.CIDR)
}

func validatePorts(side, protocol string, ports []PortRange) error {
	if len(ports) == 0 {
		return nil
	}
	if protocol != ProtocolTCP && protocol != ProtocolUDP {
		return fmt.Errorf("%s ports %s need protocol tcp or udp%s", side, ports[0], notProtocol(protocol))
	}
	for _, pr := range ports {
		if pr.Min > pr.Max {
			return fmt.Errorf("bad %s port range %d:%d: start is greater than end", side, pr.Min, pr.Max)
		}
	}
	return nil
}

// checkRuleFamilies rejects rules that can never match: iptables and
// ip6tables are separate tables, so a rule lives in exactly one family.
func checkRuleFamilies(protocol string, src, dst netip.Prefix) error {
	if src.IsValid() && dst.IsValid() && src.Addr().Is4() != dst.Addr().Is4() {
		return fmt.Errorf("from cidr %s and to cidr %s are different IP versions", src, dst)
	}
	for _, p := range []netip.Prefix{src, dst} {
		if !p.IsValid() {
			continue
		}
		if protocol == ProtocolICMP && p.Addr().Is6() {
			return fmt.Errorf("icmp is IPv4 only but cidr %s is IPv6; use icmpv6", p)
		}
		if protocol == ProtocolICMPv6 && p.Addr().Is4() {
			return fmt.Errorf("icmpv6 is IPv6 only but cidr %s is IPv4; use icmp", p)
		}
	}
	return nil
}
