// Package bpfinc holds C headers shared by the eBPF programs of
// internal/dataplane/ipip and internal/dataplane/fastpath (included by
// relative path when bpf2go compiles them); it has no Go code.
package bpfinc
