#!/usr/bin/env bash
# ensure-docker.sh: make sure the machine's Docker engine answers on its
# socket, starting it if it does not, so the Docker tests never silently
# skip. Exits 0 when the engine answers /_ping, non-zero with a loud message
# when it cannot be made to.
#
# How it starts the engine, in order of preference:
#   1. systemd, when it runs (systemctl start docker);
#   2. the SysV init script (service docker start), as Debian's docker.io
#      ships it for machines without systemd;
#   3. dockerd itself in the background, logging to /var/log/dockerd.log.
# It never stops, restarts or reconfigures an engine that is already running:
# a dockerd that runs but does not answer is reported, not killed.
#
#   ENSURE_DOCKER_SOCK   socket to check (default /var/run/docker.sock)
#   ENSURE_DOCKER_WAIT   seconds to wait for an answer (default 60)
#   --check              only report whether the engine answers; start nothing
set -euo pipefail

sock=${ENSURE_DOCKER_SOCK:-/var/run/docker.sock}
wait_s=${ENSURE_DOCKER_WAIT:-60}
pidfile=/var/run/docker.pid
direct_log=/var/log/dockerd.log
check_only=0
if [ "${1:-}" = --check ]; then check_only=1; fi

say() { echo "ensure-docker: $*" >&2; }

fail() {
  {
    echo
    echo "################################################################"
    echo "ensure-docker: FAILED: $*"
    echo "The Docker tests need the engine at $sock. They will fail, not skip."
    for log in /var/log/docker.log "$direct_log"; do
      if [ -s "$log" ]; then
        echo "--- last lines of $log ---"
        tail -n 25 "$log"
      fi
    done
    echo "################################################################"
  } >&2
  exit 1
}

answers() {
  if command -v curl >/dev/null 2>&1; then
    [ "$(curl -s --max-time 5 --unix-socket "$sock" http://docker/_ping 2>/dev/null)" = OK ]
  else
    docker -H "unix://$sock" version >/dev/null 2>&1
  fi
}

# dockerd_pid prints the pid of the machine's dockerd when its pid file names
# a live dockerd (second engines started by the tests use pid files of their
# own, so they are never mistaken for it).
dockerd_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null || true)" = dockerd ]; then
    echo "$pid"
  fi
}

# wait_answer waits until the engine answers or $1 seconds pass.
wait_answer() {
  local deadline=$((SECONDS + $1))
  while [ $SECONDS -lt $deadline ]; do
    answers && return 0
    sleep 1
  done
  answers
}

if answers; then
  say "the Docker engine answers on $sock"
  exit 0
fi
if [ "$check_only" -eq 1 ]; then
  fail "the Docker engine does not answer on $sock (--check: not starting it)"
fi
if [ "$(id -u)" -ne 0 ]; then
  fail "the Docker engine does not answer on $sock, and starting it needs root"
fi
command -v dockerd >/dev/null 2>&1 || fail "dockerd is not installed (apt-get install docker.io)"

# A dockerd that is still starting up gets the whole wait; one that runs
# but never answers is someone else's problem to look at, not ours to kill.
if pid=$(dockerd_pid) && [ -n "$pid" ]; then
  say "dockerd (pid $pid) runs but does not answer yet; waiting up to ${wait_s}s"
  wait_answer "$wait_s" && { say "the Docker engine answers on $sock"; exit 0; }
  fail "dockerd (pid $pid) runs but does not answer on $sock after ${wait_s}s; look at its log, this script will not restart it"
fi

deadline=$((SECONDS + wait_s))
started_by=""
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  say "starting the engine with systemctl start docker"
  if systemctl start docker; then started_by=systemd; fi
elif [ -x /etc/init.d/docker ]; then
  say "starting the engine with service docker start"
  if command -v service >/dev/null 2>&1; then
    if service docker start; then started_by=service; fi
  elif /etc/init.d/docker start; then
    started_by=init.d
  fi
fi

# If the service manager did not bring up a dockerd within a few seconds,
# start one directly, detached from this shell, with a log of its own.
if [ -n "$started_by" ]; then
  for _ in $(seq 1 10); do
    [ -n "$(dockerd_pid)" ] && break
    answers && break
    sleep 1
  done
fi
if [ -z "$(dockerd_pid)" ] && ! answers; then
  say "starting dockerd directly (log: $direct_log)"
  setsid nohup dockerd -p "$pidfile" >>"$direct_log" 2>&1 </dev/null &
  started_by=dockerd
fi

left=$((deadline - SECONDS))
[ $left -lt 5 ] && left=5
if wait_answer "$left"; then
  say "the Docker engine answers on $sock (started by $started_by)"
  exit 0
fi
fail "started the engine ($started_by) but it does not answer on $sock within ${wait_s}s"
