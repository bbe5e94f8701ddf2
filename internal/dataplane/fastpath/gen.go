package fastpath

// The BPF objects are generated from fastpath.c and committed, so building
// the project needs no clang. `go generate ./internal/dataplane/fastpath`
// (clang and libbpf-dev: scripts/install-deps.sh) regenerates them.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target bpfel -type wl_src_key -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" fastpath fastpath.c
