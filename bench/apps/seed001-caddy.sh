#!/bin/sh
# The Caddy flow pushdeploy's app deploys are measured against (seed 001): start the idle
# slot's instance, poll its health with curl once a second, rewrite the `reverse_proxy` the
# Caddyfile imports, `caddy reload`, stop the old instance. The release is already in place
# (this times what follows the build). Prints `live` once Caddy reloaded.
# Usage: seed001-caddy.sh NEW OLD NEW_PORT SNIPPET CADDYFILE
set -eu
new=$1 old=$2 port=$3 snippet=$4 caddyfile=$5
systemctl start "pushdeploy-www@$new.service"
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health"; do sleep 1; done
printf 'reverse_proxy 127.0.0.1:%s {\n\theader_down X-Pushdeploy-Slot %s\n}\n' "$port" "$new" \
  >"$snippet.new"
mv "$snippet.new" "$snippet"
caddy reload --adapter caddyfile --config "$caddyfile"
echo live
systemctl stop "pushdeploy-www@$old.service"
