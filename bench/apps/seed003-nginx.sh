#!/bin/sh
# The bash flow pushdeploy's app deploys are measured against (seed 003, behind nginx): start
# the idle slot's instance, poll its health with curl once a second, point nginx's upstream at
# it and reload, give the old workers 5 s to drain, stop the old instance. The release is
# already in place (this times what follows the build). Prints `live` once nginx reloaded.
# Usage: seed003-nginx.sh NEW OLD NEW_PORT LINK NGINX_CONF
set -eu
new=$1 old=$2 port=$3 link=$4 config=$5
systemctl start "pushdeploy-www@$new.service"
until curl -fsS -o /dev/null "http://127.0.0.1:$port/health"; do sleep 1; done
ln -sfn "www-$new.conf" "$link"
nginx -t -q -c "$config"
nginx -s reload -c "$config"
echo live
sleep 5
systemctl stop "pushdeploy-www@$old.service"
