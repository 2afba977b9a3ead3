#!/usr/bin/env bash
# A throwaway engine on a private socket and data root; never the system's.
#
#   scripts/engine.sh start DIR   # starts it, prints `export DOCKER_HOST=unix://DIR/docker.sock`
#   scripts/engine.sh stop DIR    # stops it (data stays in DIR for a later start)
#   scripts/engine.sh status DIR
#
# ARCHPACK_ENGINE_KIND picks the engine (default docker20):
#   docker20              the host's dockerd (Debian bookworm: 20.10), overlay2
#   docker28              Debian sid's dockerd 28 in the chroot ARCHPACK_SID_ROOT, overlay2
#   docker28-containerd   the same with the containerd image store (Docker 29's default)
#   podman5               sid's podman 5 `system service` (Docker-compatible API)
#   arm64-docker          an emulated arm64 host: bookworm arm64's dockerd under qemu-user
#                         in the chroot ARCHPACK_ARM64_ROOT (the host's runc runs containers)
# Engines in the chroot keep DIR under /tmp/apsid, bind-mounted at the same path inside.
# They run in a mount namespace of their own whose root the chroot is (pivot_root, not
# chroot: under a plain chroot, `docker exec` — and so every healthcheck — lands in the
# host's root instead of the container's).
# ARCHPACK_ENGINE_ARGS adds flags (a TLS listener, ...).
# DIR should be short: the socket path must fit in 108 bytes.
set -euo pipefail

cmd=${1:?usage: engine.sh start|stop|status DIR}
dir=${2:?usage: engine.sh start|stop|status DIR}
kind=${ARCHPACK_ENGINE_KIND:-docker20}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"
pidfile="$dir/engine.pid"
[ -f "$dir/kind" ] && kind=$(cat "$dir/kind")

# Alive and not a zombie (a killed daemon whose parent does not reap it stays one).
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
running() { [ -f "$pidfile" ] && alive "$(cat "$pidfile" 2>/dev/null)"; }

in_chroot() {
  local root
  if [ "$kind" = arm64-docker ]; then
    root=${ARCHPACK_ARM64_ROOT:?ARCHPACK_ARM64_ROOT names the arm64 chroot (ARCHPACK_CHROOT_ARCH=arm64 scripts/sid-chroot.sh ensure)}
  else
    root=${ARCHPACK_SID_ROOT:?ARCHPACK_SID_ROOT names the sid chroot (scripts/sid-chroot.sh ensure)}
  fi
  case "$dir" in
  /tmp/apsid/*) ;;
  *) echo "engine.sh: a $kind engine's DIR must be under /tmp/apsid (shared with the chroot)" >&2; exit 1 ;;
  esac
  "$(dirname "$0")/sid-chroot.sh" mount "$root" >&2
  printf '%s\n' "$root"
}

# in_root ROOT CMD...: CMD with ROOT as / in a private mount namespace.
in_root() {
  local root=$1
  shift
  # shellcheck disable=SC2016
  exec setsid unshare -m -- sh -c 'mount --make-rprivate / && cd "$0" && mkdir -p .oldroot &&
    pivot_root . .oldroot && exec "$@"' "$root" "$@"
}

case "$cmd" in
start)
  if ! running; then
    rm -f "$sock" "$pidfile" "$dir/dockerd.pid"
    echo "$kind" >"$dir/kind"
    mkdir -p "$dir/data" "$dir/exec"
    # No iptables, no bridge: nothing of the host's network is touched.
    docker_flags=(--iptables=false --bridge=none --data-root "$dir/data" --exec-root "$dir/exec"
      --pidfile "$dir/dockerd.pid" -H "unix://$sock")
    case "$kind" in
    docker20)
      command -v dockerd >/dev/null || { echo "engine.sh: dockerd missing (run scripts/install-deps.sh)" >&2; exit 1; }
      # After a crash, dockerd waits for the containerd named here if that PID "exists".
      ctr_pid="$dir/exec/containerd/containerd.pid"
      if [ -f "$ctr_pid" ] && ! alive "$(cat "$ctr_pid")"; then rm -f "$ctr_pid"; fi
      # shellcheck disable=SC2086
      setsid dockerd --storage-driver overlay2 "${docker_flags[@]}" ${ARCHPACK_ENGINE_ARGS:-} \
        >"$dir/engine.log" 2>&1 </dev/null &
      ;;
    docker28 | docker28-containerd)
      root=$(in_chroot)
      ctr_pid="$dir/exec/containerd/containerd.pid"
      if [ -f "$ctr_pid" ] && ! alive "$(cat "$ctr_pid")"; then rm -f "$ctr_pid"; fi
      if [ "$kind" = docker28-containerd ]; then
        printf '{"features":{"containerd-snapshotter":true}}\n' >"$dir/daemon.json"
        store=(--config-file "$dir/daemon.json")
      else
        printf '{}\n' >"$dir/daemon.json"
        store=(--config-file "$dir/daemon.json" --storage-driver overlay2)
      fi
      # shellcheck disable=SC2086
      (in_root "$root" dockerd "${store[@]}" "${docker_flags[@]}" ${ARCHPACK_ENGINE_ARGS:-}) \
        >"$dir/engine.log" 2>&1 </dev/null &
      ;;
    arm64-docker)
      root=$(in_chroot)
      printf '{"runtimes":{"runc-host":{"path":"/usr/local/sbin/runc-host"}},"default-runtime":"runc-host"}\n' \
        >"$dir/daemon.json"
      # shellcheck disable=SC2086
      (in_root "$root" dockerd --config-file "$dir/daemon.json" --storage-driver overlay2 \
        "${docker_flags[@]}" ${ARCHPACK_ENGINE_ARGS:-}) >"$dir/engine.log" 2>&1 </dev/null &
      ;;
    podman5)
      root=$(in_chroot)
      (in_root "$root" podman --root "$dir/data" --runroot "$dir/exec" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file \
        system service --time=0 "unix://$sock") >"$dir/engine.log" 2>&1 </dev/null &
      ;;
    *) echo "engine.sh: unknown ARCHPACK_ENGINE_KIND $kind" >&2; exit 2 ;;
    esac
    echo $! >"$pidfile"
    # An emulated engine's first start takes minutes; a native one, seconds.
    tries=120
    [ "$kind" = arm64-docker ] && tries=600
    for _ in $(seq 1 "$tries"); do
      DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1 && break
      alive "$(cat "$pidfile")" || break
      sleep 0.5
    done
    if ! DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
      echo "engine.sh: the $kind engine did not come up; last lines of $dir/engine.log:" >&2
      tail -20 "$dir/engine.log" >&2
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
  running && echo "running ($kind): unix://$sock" || { echo "stopped"; exit 1; }
  ;;
*)
  echo "usage: engine.sh start|stop|status DIR" >&2
  exit 2
  ;;
esac
