#!/usr/bin/env bash
# A throwaway Docker engine on a private socket and data root; never the system's.
#
#   scripts/engine.sh start DIR   # starts dockerd, prints `export DOCKER_HOST=unix://DIR/docker.sock`
#   scripts/engine.sh stop DIR    # stops it (data stays in DIR for a later start)
#   scripts/engine.sh status DIR
#
# ARCHPACK_ENGINE_ARGS adds dockerd flags (a TLS listener, a config file, ...).
# DIR should be short: the socket path must fit in 108 bytes.
set -euo pipefail

cmd=${1:?usage: engine.sh start|stop|status DIR}
dir=${2:?usage: engine.sh start|stop|status DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"

# Alive and not a zombie (a killed daemon whose parent does not reap it stays one).
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
running() { [ -f "$pidfile" ] && alive "$(cat "$pidfile" 2>/dev/null)"; }

case "$cmd" in
start)
  command -v dockerd >/dev/null || { echo "engine.sh: dockerd missing (run scripts/install-deps.sh)" >&2; exit 1; }
  if ! running; then
    rm -f "$sock" "$pidfile"
    # After a crash, dockerd waits for the containerd named here if that PID "exists".
    ctr_pid="$dir/exec/containerd/containerd.pid"
    if [ -f "$ctr_pid" ] && ! alive "$(cat "$ctr_pid")"; then rm -f "$ctr_pid"; fi
    mkdir -p "$dir/data" "$dir/exec"
    # No iptables, no bridge: nothing of the host's network is touched.
    setsid dockerd --storage-driver overlay2 --iptables=false --bridge=none \
      --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$pidfile" \
      -H "unix://$sock" ${ARCHPACK_ENGINE_ARGS:-} >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
      DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1 && break
      sleep 0.5
    done
    if ! DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
      echo "engine.sh: dockerd did not come up; last lines of $dir/dockerd.log:" >&2
      tail -20 "$dir/dockerd.log" >&2
      exit 1
    fi
  fi
  echo "export DOCKER_HOST=unix://$sock"
  ;;
stop)
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 60); do running || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  ;;
status)
  running && echo "running: unix://$sock" || { echo "stopped"; exit 1; }
  ;;
*)
  echo "usage: engine.sh start|stop|status DIR" >&2
  exit 2
  ;;
esac
