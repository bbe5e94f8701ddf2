package nft

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
)

// TableName is the inet table this package owns. Everything we program lives
// in it, so Cleanup and a full rewrite never touch anybody else's rules.
const TableName = "calico"

// WorkloadIfacePrefix starts the host-side name of every workload veth. Traffic
// on an interface with this prefix that has no endpoint (one being created or
// removed) is dropped rather than let through unfiltered.
const WorkloadIfacePrefix = "cali"

// Fixed object names. Short and free of nft keywords.
const (
	chainSource     = "from-wl-src" // prerouting hook, priority raw: anti-spoofing, before conntrack
	chainFwdEgress  = "fwd-from-wl" // forward hook, priority filter-1: source workload's outbound policy
	chainFwdIngress = "fwd-to-wl"   // forward hook, priority filter: destination workload's inbound policy
	chainInput      = "input"       // input hook: traffic from workloads to the host itself
	chainWlToHost   = "wl-to-host"  // what a workload may send to the host
	chainNAT        = "nat-out"     // postrouting, srcnat: NAT outgoing
	chainVXLANIn    = "vxlan-in"    // VXLAN datagrams to the host: from nodes, with inner sources they own
	chainDNATPre    = "dnat-pre"    // prerouting, dstnat: published ports, from other hosts
	chainDNATOut    = "dnat-out"    // output, dstnat: published ports, from the host itself
	chainPublish    = "publish"     // one DNAT rule per published port (docker run -p)

	mapFromWl = "from-wl" // iifname -> jump ep-out-*
	mapToWl   = "to-wl"   // oifname -> jump ep-in-*
	// A label policy's Pass: the endpoint's interface -> goto its profile
	// stage (eprof-in-* for the receiving workload, eprof-out-* for the
	// sending one).
	mapPassIn  = "pass-in"
	mapPassOut = "pass-out"
	// dispatchMapType is the type of the dispatch maps by interface name.
	dispatchMapType = "ifname : verdict"
	// The endpoints that share a profile list (and no label policy applies
	// to) are dispatched by their host side's device group instead
	// (calc.ProfileGroup): one entry and one pair of chains per list.
	mapGrpFrom   = "grp-from" // iifgroup -> jump grp-out-*
	mapGrpTo     = "grp-to"   // oifgroup -> jump grp-in-*
	groupMapType = "devgroup : verdict"

	setWlSrc4 = "wl-src4" // workload interface . its IPv4 address: what it may send from
	setWlSrc6 = "wl-src6" // same, IPv6
	// setWlGroups holds (interface . device group) of every endpoint
	// dispatched by its group: a group carried by any other interface (a
	// leftover veth, one changed by hand) dispatches nothing.
	setWlGroups = "wl-groups"
	setMasq4    = "masq4"  // pools with nat-outgoing, IPv4
	setMasq6    = "masq6"  // same, IPv6
	setPools4   = "pools4" // every pool, IPv4: destinations never masqueraded
	setPools6   = "pools6"

	setCPHosts4 = "cp-hosts4" // control-plane hosts: every node address, the datastore's hosts
	setCPHosts6 = "cp-hosts6"
	setCPPorts  = "cp-ports"   // control-plane ports on them: l4proto . port
	setPub4     = "published4" // workload address . l4proto . port reached through a published port
)

// vxlanSrcSet names the set of (node address . inner IPv4 network) pairs
// whose inner prefixes are bits long.
func vxlanSrcSet(bits int) string { return "vxlan-src-" + strconv.Itoa(bits) }

// Prefixes of the per-object names. The endpoint prefix lets the incremental
// planner delete endpoint chains before the profile chains they jump to.
const (
	prefixEpOut   = "ep-out-"
	prefixEpIn    = "ep-in-"
	prefixProfOut = "prof-out-"
	prefixProfIn  = "prof-in-"
	prefixTag4    = "tag4-"
	prefixTag6    = "tag6-"
	endpointChain = "ep-"
	// Label policies: one chain per policy and direction, the profile
	// stage of an endpoint that label policies apply to (Pass goes there),
	// and per rule selector one set per family.
	prefixPolIn      = "pol-in-"
	prefixPolOut     = "pol-out-"
	policyChain      = "pol-"
	prefixEpProfIn   = "eprof-in-"
	prefixEpProfOut  = "eprof-out-"
	endpointProfiles = "eprof-"
	prefixSel4       = "sel4-"
	prefixSel6       = "sel6-"
	// A profile list's chains, by device group.
	prefixGrpOut = "grp-out-"
	prefixGrpIn  = "grp-in-"
	groupChain   = "grp-"
)

// maxReadable bounds the human-readable part of a generated name. With the
// longest prefix and the hash, a name stays under 64 bytes: far below the
// kernel's 256 (NFT_NAME_MAXLEN) and short enough to read in `nft list`.
const maxReadable = 40

// hashLen is the number of hex digits of SHA-256 kept. 40 bits make an
// accidental collision between two names of one kind practically impossible
// at any realistic count of profiles or tags.
const hashLen = 10

// objName maps an arbitrary name (a profile, tag or interface name, which may
// hold ".", ":", "/", spaces or non-ASCII, and may be long) to an nft
// identifier: prefix + sanitized, truncated name + "-" + a hash of the exact
// original. The hash is always appended, so two names that sanitize alike
// ("a.b" and "a:b") or share a long common start still get distinct objects,
// and the same name always gets the same object (restarts find their chains).
func objName(prefix, name string) string {
	k := [2]string{prefix, name}
	objNames.Lock()
	defer objNames.Unlock()
	if s, ok := objNames.m[k]; ok {
		return s
	}
	if len(objNames.m) >= objNamesMax {
		clear(objNames.m) // names of objects long gone do not pile up
	}
	s := makeObjName(prefix, name)
	objNames.m[k] = s
	return s
}

// objNames memoizes objName: every Apply renders the names of every
// endpoint's, profile's and policy's objects again, and hashing them was a
// fifth of a label change's planning at 1000 endpoints.
var objNames = struct {
	sync.Mutex
	m map[[2]string]string
}{m: map[[2]string]string{}}

// objNamesMax bounds objNames; it is emptied when full.
const objNamesMax = 1 << 16

func makeObjName(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	var b strings.Builder
	n := min(len(name), maxReadable)
	b.Grow(len(prefix) + n + 1 + hashLen)
	b.WriteString(prefix)
	for i := 0; i < n; i++ {
		c := name[i]
		if isIdentByte(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	b.WriteByte('-')
	var h [hashLen / 2]byte
	copy(h[:], sum[:])
	var hx [hashLen]byte
	hex.Encode(hx[:], h[:])
	b.Write(hx[:])
	return b.String()
}

// isIdentByte reports whether c may appear inside an nft identifier (after
// its first character, which our prefixes always supply). "/" is allowed by
// nft but left out so names never look like paths or prefixes.
func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '_' || c == '-' || c == '.'
}

func profileOutChain(profile string) string { return objName(prefixProfOut, profile) }
func profileInChain(profile string) string  { return objName(prefixProfIn, profile) }
func endpointOutChain(iface string) string  { return objName(prefixEpOut, iface) }
func endpointInChain(iface string) string   { return objName(prefixEpIn, iface) }
func tagSet4(tag string) string             { return objName(prefixTag4, tag) }
func policyInChain(policy string) string    { return objName(prefixPolIn, policy) }
func policyOutChain(policy string) string   { return objName(prefixPolOut, policy) }
func endpointProfIn(iface string) string    { return objName(prefixEpProfIn, iface) }
func groupOutChain(g uint32) string         { return prefixGrpOut + strconv.FormatUint(uint64(g), 16) }
func groupInChain(g uint32) string          { return prefixGrpIn + strconv.FormatUint(uint64(g), 16) }

// groupKey is a device group as a dispatch map's key.
func groupKey(g uint32) string { return strconv.FormatUint(uint64(g), 10) }

// mapType is the type of dispatch map name.
func mapType(name string) string {
	if name == mapGrpFrom || name == mapGrpTo {
		return groupMapType
	}
	return dispatchMapType
}
func endpointProfOut(iface string) string { return objName(prefixEpProfOut, iface) }
func selectorSet4(sel string) string      { return objName(prefixSel4, sel) }
func selectorSet6(sel string) string      { return objName(prefixSel6, sel) }
func tagSet6(tag string) string           { return objName(prefixTag6, tag) }

// validIfaceName checks what the kernel accepts as an interface name (at most
// 15 bytes, no "/", ":" or whitespace) and what would break or change the
// meaning of an nft string literal ('"', '\\', and "*", a wildcard in nft
// interface matches).
func validIfaceName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`/:"\*`, c) >= 0 {
			return false
		}
	}
	return true
}
