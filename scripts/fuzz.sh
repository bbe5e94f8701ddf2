#!/usr/bin/env bash
# fuzz.sh: run every fuzz target briefly (CI), or longer by hand:
#   scripts/fuzz.sh                 # each target for 10s
#   FUZZTIME=10m scripts/fuzz.sh    # each target for 10 minutes
#   scripts/fuzz.sh FuzzDecodeRecord   # only the named target(s)
# A failing input is written by `go test` to the package's
# testdata/fuzz/<Target>/ directory, where it stays as a regression case that
# every plain `go test` run replays: commit it with the fix.
set -euo pipefail

cd "$(dirname "$0")/.."
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
FUZZTIME=${FUZZTIME:-10s}

# package:target, one per fuzz function.
targets=(
  ./internal/rules:FuzzParse
  ./internal/api:FuzzParseCIDR
  ./internal/decode:FuzzDecodeRecord
  ./internal/ipam:FuzzDecodeBlock
  ./internal/ipam:FuzzParsePool
  ./internal/datastore:FuzzEndpoints
  ./internal/selector:FuzzParse
  ./internal/resource:FuzzDecode
)

want() {
  [ $# -eq 0 ] && return 0
  local t=$1
  shift
  for w in "$@"; do [ "$w" = "$t" ] && return 0; done
  return 1
}

failed=()
for pt in "${targets[@]}"; do
  pkg=${pt%%:*}
  target=${pt##*:}
  want "$target" "$@" || continue
  echo "fuzz: $target in $pkg for $FUZZTIME"
  if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"; then
    echo "fuzz: $target FAILED; the input is in $pkg/testdata/fuzz/$target/" >&2
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failing targets: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets passed"
