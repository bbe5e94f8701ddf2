#!/usr/bin/env bash
# check-bpf.sh: the BPF objects are generated from C (bpf2go) and committed,
# so building needs no clang. Where clang is installed, regenerate them and
# fail if they differ from the committed ones: someone changed the C without
# running `go generate` for its package (the regenerated files are left in
# place to commit).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang >/dev/null 2>&1; then
  echo "check-bpf: clang not installed; skipping the regeneration check"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for pkg in internal/dataplane/ipip internal/dataplane/fastpath; do
  mkdir -p "$tmp/$pkg"
  cp "$pkg"/*_bpfel.go "$pkg"/*_bpfel.o "$tmp/$pkg"/
  go generate "./$pkg"
  for f in "$tmp/$pkg"/*; do
    if ! cmp -s "$f" "$pkg/$(basename "$f")"; then
      echo "check-bpf: $pkg/$(basename "$f") differs from what its C generates; commit the regenerated file" >&2
      status=1
    fi
  done
done
[ "$status" -eq 0 ] && echo "check-bpf: generated BPF objects are up to date"
exit "$status"
