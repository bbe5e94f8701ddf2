#!/usr/bin/env bash
# install-deps.sh: install the Debian packages the project's demo, tests and
# benchmarks shell out to. Idempotent: packages already installed are skipped,
# and `apt-get update` runs only when something is actually missing (it is the
# slow, network-touching step). Needs root; never asks questions.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: must run as root" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Required packages, and ones we use when the archive has them (qperf is used
# by the seed walkthrough's benchmark but is not in every Debian release).
required=(iproute2 iputils-ping iperf3 nftables netbase bird2 tcpdump procps busybox-static iptables)
# test/cni runs podman with the CNI backend, `ctr run --cni` (containerd, a
# private instance) and Debian's CNI plugins (portmap, loopback). Installing
# podman adds /etc/cni/net.d/87-podman-bridge.conflist; the tests use
# configuration directories of their own.
required+=(podman conmon runc containernetworking-plugins containerd)
# test/ui drives the web view (calicoctl ui) in headless Chromium through
# chromedp; Debian's chromium runs headless without a display server.
required+=(chromium)
# clang, llvm, libbpf-dev and linux-libc-dev only regenerate the committed BPF
# objects (make generate, scripts/check-bpf.sh); building never needs them.
optional=(qperf clang llvm libbpf-dev linux-libc-dev)

installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = 'install ok installed' ]
}

# has_candidate tells whether the apt archive offers a package at all, so a
# missing optional package is reported and skipped rather than failing.
has_candidate() {
  local c
  c=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  [ -n "$c" ] && [ "$c" != "(none)" ]
}

missing=()
for p in "${required[@]}" "${optional[@]}"; do
  installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages already installed"
  exit 0
fi

is_optional() {
  local o
  for o in "${optional[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

# When only optional packages are missing and the archive (as last fetched)
# does not offer them, an update per run would be slow for nothing. Without
# any package lists we cannot tell, so update.
need_update=0
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then need_update=1; fi
for p in "${missing[@]}"; do
  if ! is_optional "$p" || has_candidate "$p"; then need_update=1; fi
done
if [ "$need_update" -eq 0 ]; then
  echo "install-deps: optional package(s) ${missing[*]} not in the archive; skipping"
  exit 0
fi

log=$(mktemp /tmp/install-deps.XXXXXX.log)
policy_rc=/usr/sbin/policy-rc.d
made_policy=0
cleanup() {
  # Remove only the policy-rc.d we created ourselves.
  if [ "$made_policy" -eq 1 ]; then rm -f "$policy_rc"; fi
  rm -f "$log"
}
trap cleanup EXIT

quiet() {
  # Run a command with its output in the log; show the log only on failure.
  if ! "$@" >>"$log" 2>&1; then
    echo "install-deps: failed: $*" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

echo "install-deps: updating the package index"
quiet apt-get -o DPkg::Lock::Timeout=600 update -qq

to_install=()
for p in "${missing[@]}"; do
  if is_optional "$p" && ! has_candidate "$p"; then
    echo "install-deps: optional package $p is not in the archive; skipping"
    continue
  fi
  to_install+=("$p")
done

if [ ${#to_install[@]} -eq 0 ]; then
  exit 0
fi

in_list() {
  local x=$1 y
  shift
  for y in "$@"; do [ "$y" = "$x" ] && return 0; done
  return 1
}

# iperf3's package asks whether to run a system-wide daemon; the lab starts its
# own servers inside namespaces, so a daemon on the real host would only be in
# the way.
if in_list iperf3 "${to_install[@]}"; then
  echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections
fi

# Keep maintainer scripts from starting services (bird2 starts its daemon on
# install). policy-rc.d exit 101 is Debian's documented "action forbidden";
# we only create it when the machine does not already have one.
if [ ! -e "$policy_rc" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
  chmod 0755 "$policy_rc"
  made_policy=1
fi

echo "install-deps: installing ${to_install[*]}"
quiet apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
  -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${to_install[@]}"

# BIRD is only ever run by the tests, inside lab namespaces with their own
# configs: make sure the packaged system service is neither running nor
# enabled. Every command is guarded, because containers have no systemd.
if in_list bird2 "${to_install[@]}"; then
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now bird.service >/dev/null 2>&1 || true
  else
    if command -v update-rc.d >/dev/null 2>&1 && [ -e /etc/init.d/bird ]; then
      update-rc.d bird disable >/dev/null 2>&1 || true
    fi
    # Stop a daemon only if the package's own pid file names a running bird
    # (it would be the one the package just started), never by name.
    for pf in /run/bird/bird.pid /var/run/bird/bird.pid; do
      if [ -r "$pf" ]; then
        pid=$(cat "$pf" 2>/dev/null || true)
        if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = bird ]; then
          kill "$pid" 2>/dev/null || true
        fi
      fi
    done
  fi
fi

echo "install-deps: done"
