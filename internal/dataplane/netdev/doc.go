// Package netdev is the netlink half of the dataplane: it wires workloads
// (veth pairs, addresses, default routes), keeps their host sides as
// HostSide describes them (WorkloadIfaceSyncer), keeps the routes this host
// owns in the kernel's main table, runs the VXLAN tunnel device with its neighbour and
// forwarding entries, and answers questions about the kernel (which link types
// it has, which interface holds an address).
//
// Besides the nftables applier this is the only code that changes the kernel.
// Every entry point programs the caller's current network namespace unless
// given InNetns(path); programming another namespace goes through netlink
// handles opened inside it, and the few settings only reachable through
// /proc/sys are written from a locked OS thread that is moved into the
// namespace and back, because goroutines otherwise hop between threads and a
// thread's namespace would leak to unrelated code.
//
// The package is named netdev rather than netlink so that it never shadows
// github.com/vishvananda/netlink, which both it and its callers import.
package netdev
