#!/usr/bin/env bash
# Local demo: builds mcp and mcp-agent, serves podman's API on a private
# socket, starts the agent in LOCAL auth mode (one generated token, no MCIAS:
# for a single machine only), and deploys examples/hello.toml.
#   scripts/demo.sh        set up and deploy
#   scripts/demo.sh stop   stop the agent, the API socket and the demo containers
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state="$repo/.state/demo"
export CONTAINERS_CONF="$repo/scripts/containers.conf"
export XDG_CONFIG_HOME="$state/config"
image=localhost/mcp-demo-busybox:latest
mcp="$repo/target/debug/mcp"

stop() {
    for pidfile in "$state/agent.pid" "$state/podman.pid"; do
        if [ -f "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
    podman rm --force --time 0 hello-web hello-ticker >/dev/null 2>&1 || true
    echo "demo: stopped"
}

if [ "${1:-}" = "stop" ]; then
    stop
    exit 0
fi

scripts/setup.sh
echo "demo: building"
cargo build --quiet --bins
mkdir -p "$state" "$XDG_CONFIG_HOME/mcp/services"
stop >/dev/null

if ! podman image exists "$image"; then
    echo "demo: building $image from busybox-static"
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/www"
    cp /bin/busybox "$rootfs/bin/busybox"
    for t in sh httpd sleep date echo cat; do ln -s busybox "$rootfs/bin/$t"; done
    echo "hello from MCP" > "$rootfs/www/index.html"
    tar -C "$rootfs" -cf "$rootfs.tar" .
    podman import --quiet "$rootfs.tar" "$image" >/dev/null
    rm -rf "$rootfs" "$rootfs.tar"
fi

socket="$state/podman.sock"
rm -f "$socket"
podman system service --time=0 "unix://$socket" >"$state/podman.log" 2>&1 &
echo $! >"$state/podman.pid"
for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done

"$repo/target/debug/mcp-agent" serve --auth local --node local \
    --listen 127.0.0.1:9444 --state-dir "$state/agent" --runtime-socket "$socket" \
    >"$state/agent.log" 2>&1 &
echo $! >"$state/agent.pid"
for _ in $(seq 100); do [ -f "$state/agent/tls/ca.pem" ] && break; sleep 0.1; done
sleep 0.5

cat >"$XDG_CONFIG_HOME/mcp/mcp.toml" <<TOML
[nodes.local]
address = "127.0.0.1:9444"
ca = "$state/agent/tls/ca.pem"
TOML
install -m 0600 "$state/agent/token" "$XDG_CONFIG_HOME/mcp/token"
cp examples/hello.toml "$XDG_CONFIG_HOME/mcp/services/hello.toml"

echo "demo: agent log (note the LOCAL auth warning):"
grep -E "WARN|listening" "$state/agent.log" | sed 's/^/    /'
echo "demo: mcp deploy hello"
"$mcp" deploy hello
sleep 0.5
echo "demo: curl http://127.0.0.1:8080/ -> $(curl -s http://127.0.0.1:8080/)"
echo "demo: mcp ps"
"$mcp" ps
cat <<EOT

The agent keeps running. Try, in this shell:
    export XDG_CONFIG_HOME=$XDG_CONFIG_HOME CONTAINERS_CONF=$CONTAINERS_CONF
    $mcp list
    $mcp stop hello/ticker && $mcp ps
    $mcp start hello
Edit $XDG_CONFIG_HOME/mcp/services/hello.toml and run '$mcp deploy hello/web'.
Stop everything with: scripts/demo.sh stop
EOT
