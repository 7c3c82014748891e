#!/usr/bin/env bash
# Benchmarks an app deploy: the time from the end of the build to live, pushdeploy against
# seed 003's bash flow (nginx) and seed 001's flow (Caddy), and pushdeploy's peak RSS. The
# work is done by the ignored test `app_bench::app_switch_benchmark` (release build), which
# boots real systemd in private namespaces as the app tests do. See bench/README.md.
#
# Usage: sudo bench/app.sh [--rounds N] [--out FILE]

set -euo pipefail

usage() {
    cat <<'USAGE'
Usage: sudo bench/app.sh [--rounds N] [--out FILE]

Times app deploys (gunicorn under real systemd, in private namespaces) behind nginx and Caddy:
`pushdeploy deploy` against seed 003's bash flow and seed 001's Caddy flow (bench/apps/),
interleaved round by round, and the app alone (the floor). Prints a markdown table.

  --rounds N   rounds (default 5)
  --out FILE   also write the table to FILE
  -h, --help   show this help

Needs root, systemd, util-linux, nginx, caddy, gunicorn, curl, /usr/bin/time and cargo.
USAGE
}

rounds=5
out=
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) printf 'bench/app.sh: error: unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo 'bench/app.sh: error: run it as root (it boots systemd in namespaces)' >&2; exit 1; }
for program in /lib/systemd/systemd unshare nsenter /usr/sbin/nginx /usr/bin/caddy \
    /usr/bin/gunicorn curl /usr/bin/time cargo; do
    command -v "$program" >/dev/null || {
        printf 'bench/app.sh: error: %s is missing: apt-get install systemd util-linux nginx caddy gunicorn curl time\n' "$program" >&2
        exit 1
    }
done
cd "$(dirname "$0")/.."
table=$(PUSHDEPLOY_BENCH_ROUNDS=$rounds cargo test --release --locked --test integration \
    app_bench::app_switch_benchmark -- --ignored --exact --nocapture --test-threads=1 |
    grep -E '^(\||pushdeploy, |rounds: )')
machine="$(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
table=$(printf '%s\n\nmachine: %s; load before the run: %s\n' "$table" "$machine" "$(cut -d' ' -f1-3 /proc/loadavg)")
printf '%s\n' "$table"
if [ -n "$out" ]; then printf '%s\n' "$table" >"$out"; fi
