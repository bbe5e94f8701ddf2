package ipip

// The BPF objects are generated from ipip.c and committed, so building the
// project needs no clang. `go generate ./internal/dataplane/ipip` (clang and
// libbpf-dev: scripts/install-deps.sh) regenerates them; CI diffs the result.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type route_key -type route_val -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" ipip ipip.c
