#!/usr/bin/env bash
# check-bpf.sh: the BPF objects are generated from C (bpf2go) and committed,
# so building needs no clang. Where clang is installed, regenerate them and
# fail if they differ from the committed ones: someone changed the C without
# running `go generate ./internal/dataplane/ipip` (the regenerated files are
# left in place to commit).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang >/dev/null 2>&1; then
  echo "check-bpf: clang not installed; skipping the regeneration check"
  exit 0
fi
pkg=internal/dataplane/ipip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$pkg"/*_bpfel.go "$pkg"/*_bpfel.o "$tmp"/
go generate "./$pkg"
status=0
for f in "$tmp"/*; do
  if ! cmp -s "$f" "$pkg/$(basename "$f")"; then
    echo "check-bpf: $pkg/$(basename "$f") differs from what $pkg/ipip.c generates; commit the regenerated file" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "check-bpf: generated BPF objects are up to date"
exit "$status"
