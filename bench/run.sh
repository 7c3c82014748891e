#!/usr/bin/env bash
# Benchmarks pushdeploy against the plain bash deploy flow and `git checkout -f`.
#
# Generates a reference site (100 directories x 100 HTML files of ~7 KB, plus 300 binary files
# of 200 KB; commit A, then commit B changing 10 HTML files) in a temporary directory, pushes it
# to a bare repository made by `pushdeploy init`, and times every contender round-robin, one
# run of each per round, after one warm-up round that is not counted. Prints a markdown table of
# medians. See bench/README.md.
#
# With --files N (1000, 10000, 100000, ...) the site is N pages of ~2 KB in N/100 directories
# instead (the size sweep of issue 16).
#
# Usage: bench/run.sh [--rounds N] [--files N] [--out FILE] [--keep]

set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf use "." as the decimal point only in the C locale.

usage() {
    cat <<'EOF'
Usage: bench/run.sh [--rounds N] [--files N] [--out FILE] [--keep]

Benchmarks pushdeploy (release build) against the bash flow (git archive | tar -x, ln -sfn,
mv -fT, rm -rf), the same flow with `sync -f` before the switch, and `git checkout -f`, on a
generated 10,300-file site. Prints a markdown table of medians on stdout.

  --rounds N   timed rounds, after one uncounted warm-up round (default 5)
  --files N    a site of N pages of ~2 KB in N/100 directories (a multiple of 100) instead
               of the 10,300-file reference site
  --out FILE   also write the table to FILE
  --keep       keep the temporary directory (site, bare repository, targets) for inspection
  -h, --help   show this help

The temporary directory is made by `mktemp -d` (set TMPDIR to choose its filesystem).
EOF
}

die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

say() {
    printf 'bench: %s\n' "$*" >&2
}

rounds=5
out=
keep=0
files=0
while (($#)); do
    case $1 in
    --files)
        (($# >= 2)) || die "--files needs a number"
        files=$2
        shift 2
        ;;
    --rounds)
        (($# >= 2)) || die "--rounds needs a number"
        rounds=$2
        shift 2
        ;;
    --rounds=*)
        rounds=${1#--rounds=}
        shift
        ;;
    --out)
        (($# >= 2)) || die "--out needs a file name"
        out=$2
        shift 2
        ;;
    --out=*)
        out=${1#--out=}
        shift
        ;;
    --keep)
        keep=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a positive whole number, not '$rounds'"
[[ $files =~ ^[0-9]+$ ]] && ((files % 100 == 0)) || die "--files takes a multiple of 100, not '$files'"
if [[ -n $out ]]; then
    out=$(realpath -m -- "$out")
    [[ -d $(dirname -- "$out") ]] || die "no directory for --out: $(dirname -- "$out")"
fi

# --- Tools -----------------------------------------------------------------------------------

[[ -n ${EPOCHREALTIME:-} ]] || die "bash 5 or newer is needed (for EPOCHREALTIME)"
missing=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian/Ubuntu package: $2)")
}
need cargo "cargo, or rustup from https://rustup.rs"
need git git
need tar tar
need openssl openssl
need awk mawk
need diff diffutils
need flock util-linux
for tool in sed sort split head sync df realpath mktemp du; do
    need "$tool" coreutils
done
[[ -x /usr/bin/time ]] || missing+=("/usr/bin/time (Debian/Ubuntu package: time)")
if ((${#missing[@]})); then
    printf 'bench: missing tool: %s\n' "${missing[@]}" >&2
    die "install what is missing (e.g. apt-get update && apt-get install -y time), then rerun"
fi

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
started=$SECONDS

# --- Build -----------------------------------------------------------------------------------

say "building pushdeploy (cargo build --release)"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" >&2
target_dir=$(realpath -m -- "${CARGO_TARGET_DIR:-$root/target}") # cargo reads it from the cwd
pushdeploy=$target_dir/release/pushdeploy
[[ -x $pushdeploy ]] || die "no binary at $pushdeploy after the build"

# --- Temporary directory ---------------------------------------------------------------------

work=$(mktemp -d -t pushdeploy-bench.XXXXXX)
cleanup() {
    if ((keep)); then
        say "kept $work"
    elif [[ -n ${work:-} && -d $work ]]; then
        say "removing $work"
        rm -rf -- "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

src=$work/src             # the work repository where the site is committed
bare=$work/site.git       # the bare repository, made by `pushdeploy init`
pd_target=$work/pd        # pushdeploy's target
keep_bare=$work/keep.git  # a second repository, deployed with [retire] keep_previous = true
keep_target=$work/keep    # its target
bash_target=$work/bash    # the bash flow's target
sync_target=$work/sync    # the bash flow + sync's target
co_git=$work/checkout.git # a local clone of $bare, so that `checkout -f` does not move its HEAD
co_tree=$work/checkout    # the work tree `git checkout -f` writes into
logs=$work/logs
mkdir -p "$logs" "$bash_target" "$sync_target" "$co_tree"

# A hermetic git: no user or system configuration, fixed identity and dates, so that commits A
# and B get the same ids on every machine.
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
export GIT_AUTHOR_DATE=2024-01-01T00:00:00Z GIT_COMMITTER_DATE=2024-01-01T00:00:00Z

# --- The reference site ----------------------------------------------------------------------

say "generating the site in $work"
site=$src
git init -q -b main "$site"
if ((files)); then
    dirs=$((files / 100))
    page_bytes=2000
    site_text="$files pages of ~2 KB in $dirs directories"
else
    dirs=100
    page_bytes=7000
    site_text="100 × 100 HTML pages of ~7 KB, 300 random 200 KB files"
fi
mkdir -p "$site/assets"
for ((d = 0; d < dirs; d++)); do mkdir -p "$(printf '%s/section-%03d' "$site" "$d")"; done

# HTML pages: a fixed pool of paragraphs, picked per page by a Park-Miller generator (exact in
# double precision, so every awk gives the same bytes).
awk -v dir="$site" -v dirs="$dirs" -v bytes="$page_bytes" '
function rand31() { seed = (seed * 16807) % 2147483647; return seed }
BEGIN {
    seed = 42
    nw = split("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor " \
        "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud " \
        "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure " \
        "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint " \
        "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est " \
        "laborum deploy release branch commit static site server symlink atomic rename", words, " ")
    for (p = 0; p < 64; p++) {
        text = ""
        while (length(text) < 480) text = text words[rand31() % nw + 1] " "
        para[p] = "<p>" text "</p>\n"
    }
    for (d = 0; d < dirs; d++) {
        for (f = 0; f < 100; f++) {
            path = sprintf("%s/section-%03d/page-%03d.html", dir, d, f)
            page = sprintf("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n" \
                "<title>Section %d, page %d</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n" \
                "</head>\n<body>\n<main>\n<h1>Section %d, page %d</h1>\n", d, f, d, f)
            while (length(page) < bytes) page = page para[rand31() % 64]
            printf "%s</main>\n</body>\n</html>\n", page > path
            close(path)
        }
    }
}'

if ((files)); then
    echo "body { font-family: sans-serif }" >"$site/assets/style.css"
    expected_files=$((files + 1))
else
    # 300 files of 200 KB of random bytes: AES-128-CTR of zeros under a fixed key and IV.
    head -c $((300 * 200 * 1024)) < <(openssl enc -aes-128-ctr -nosalt \
        -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 \
        </dev/zero 2>/dev/null) |
        split -b $((200 * 1024)) -d -a 3 --additional-suffix=.bin - "$site/assets/blob-"
    expected_files=10300
fi
site_files=$(find "$site" -path "$site/.git" -prune -o -type f -print | wc -l)
site_mib=$(du -s --block-size=1M --exclude=.git "$site" | awk '{print $1}')
((site_files == expected_files)) || die "generated $site_files files instead of $expected_files"

git -C "$site" add -A
git -C "$site" commit -q -m "A: the reference site"
commit_a=$(git -C "$site" rev-parse HEAD)
for i in {0..9}; do
    page=$(printf '%s/section-%03d/page-%03d.html' "$site" $((i * dirs / 10)) $((i * 10 + 5)))
    sed -i 's|</main>|<p class="news">Updated in commit B.</p>\n</main>|' "$page"
done
git -C "$site" commit -q -a -m "B: 10 pages changed"
commit_b=$(git -C "$site" rev-parse HEAD)
# C changes the same 10 pages of A otherwise: with keep_previous the idle slot holds the
# release of two deploys before, so the cycle A, B, C keeps every diff at 10 files.
git -C "$site" checkout -q -b c "$commit_a"
for i in {0..9}; do
    page=$(printf '%s/section-%03d/page-%03d.html' "$site" $((i * dirs / 10)) $((i * 10 + 5)))
    sed -i 's|</main>|<p class="news">Updated in commit C.</p>\n</main>|' "$page"
done
git -C "$site" commit -q -a -m "C: the same 10 pages changed otherwise"
commit_c=$(git -C "$site" rev-parse HEAD)
git -C "$site" checkout -q main
changed=$(git -C "$site" diff --name-only "$commit_a" "$commit_b" | wc -l)
((changed == 10)) || die "commit B changes $changed files instead of 10"

say "pushing to a bare repository made by pushdeploy init (its hook deploys A, then B)"
"$pushdeploy" init "$bare" --target "$pd_target" >"$logs/init.log" 2>&1 ||
    die "pushdeploy init failed: $(cat "$logs/init.log")"
git -C "$site" push -q "$bare" "$commit_a:refs/heads/main" >"$logs/push.log" 2>&1
git -C "$site" push -q "$bare" main >>"$logs/push.log" 2>&1
grep -q 'live: ' "$logs/push.log" || die "the hook did not deploy: $(cat "$logs/push.log")"
"$pushdeploy" init "$keep_bare" --target "$keep_target" >>"$logs/init.log" 2>&1 ||
    die "pushdeploy init failed: $(cat "$logs/init.log")"
printf '\n[retire]\nkeep_previous = true\n' >>"$keep_bare/pushdeploy.toml"
git -C "$site" push -q "$keep_bare" "$commit_a:refs/heads/main" >>"$logs/push.log" 2>&1
git -C "$site" push -q "$keep_bare" main c >>"$logs/push.log" 2>&1
git -C "$site" push -q "$bare" c >>"$logs/push.log" 2>&1
git clone -q --bare "$bare" "$co_git"
pack_mib=$(du -s --block-size=1M "$bare/objects/pack" | awk '{print $1}')

# --- Contenders ------------------------------------------------------------------------------

# Samples, as space-separated lists per contender.
declare -A total_s=() live_s=() rss_s=()
recording=0

record() { # record KEY TOTAL TIME-TO-LIVE RSS-KiB
    ((recording)) || return 0
    total_s[$1]+=" $2"
    [[ $3 == - ]] || live_s[$1]+=" $3"
    [[ $4 == - ]] || rss_s[$1]+=" $4"
}

seconds_between() { # seconds_between START END
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'
}

# Flushes what earlier runs left dirty, so that no contender pays for another one's writes
# (syncfs(2) flushes the whole filesystem). First waits until pushdeploy's detached removal of
# the old release (it holds the trash lock) is over, so that it does not overlap the next run.
settle() {
    local target i
    for target in "$pd_target" "$keep_target"; do
        [[ -d $target/.pushdeploy ]] || continue
        # The remover may not have taken the lock yet: wait until the trash is empty, then
        # for the lock (it records its window in the indexes before it lets go).
        for ((i = 0; i < 6000; i++)); do
            [[ -d $target/.pushdeploy/trash && -n $(ls -A "$target/.pushdeploy/trash") ]] || break
            sleep 0.05
        done
        flock "$target/.pushdeploy/trash.lock" true
    done
    sync -f "$work"
}

# Empties a target for a first deploy.
reset_target() {
    rm -rf -- "$1/blue" "$1/green" "$1/public_html" "$1/.pushdeploy" "$1/.public_html.pushdeploy-new" "$1/tmp"
}

# pushdeploy deploy KEY REV [REPO]: one timed deploy, with its peak RSS.
run_pushdeploy() {
    local key=$1 rev=$2 repo=${3:-$bare} t0 t1 total line live rss
    settle
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -v -o "$logs/time.txt" "$pushdeploy" deploy --repo "$repo" "$rev" 2>"$logs/pushdeploy.log"; then
        cat "$logs/pushdeploy.log" >&2
        die "pushdeploy deploy $rev failed"
    fi
    t1=$EPOCHREALTIME
    total=$(seconds_between "$t0" "$t1")
    line=$(grep 'live: ' "$logs/pushdeploy.log" | tail -n 1) || die "no live line from pushdeploy: $(cat "$logs/pushdeploy.log")"
    # The history has the time to live unrounded (the live line rounds it to 10 ms).
    local history=$pd_target/.pushdeploy/history.jsonl
    if [[ $repo == "$keep_bare" ]]; then history=$keep_target/.pushdeploy/history.jsonl; fi
    live=$(tail -n 1 "$history" | sed -nE 's/.*"time_to_live":([0-9.e-]+).*/\1/p')
    [[ -n $live ]] || die "cannot read time_to_live in: $(tail -n 1 "$history")"
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$logs/time.txt")
    record "$key" "$total" "$live" "$rss"
    say "  $key $(short_rev "$rev"): $total s (live after $live s, peak RSS $((rss / 1024)) MiB)"
    if [[ $key == keep_switch ]] && ! grep -q 'applied the changes since' "$logs/pushdeploy.log"; then
        cat "$logs/pushdeploy.log" >&2
        die "the keep_previous deploy did not take the diff route"
    fi
}

# The bash flow, as a post-receive hook would run it: archive into the slot that is not live,
# switch the link with a rename, remove the old slot. Sets $switched to when the link moved.
bash_flow() { # bash_flow TARGET REV SYNC(0/1)
    local target=$1 rev=$2 sync=$3 live new
    live=$(readlink "$target/public_html" || true)
    if [[ $live == blue ]]; then new=green; else new=blue; fi
    mkdir "$target/$new"
    git --git-dir="$bare" archive --format=tar "$rev" | tar -x -C "$target/$new"
    if ((sync)); then sync -f "$target"; fi
    ln -sfn "$new" "$target/tmp" && mv -fT "$target/tmp" "$target/public_html"
    switched=$EPOCHREALTIME
    if [[ -n $live ]]; then rm -rf -- "${target:?}/$live"; fi
}

run_bash_flow() { # run_bash_flow KEY TARGET REV SYNC
    local key=$1 t0 t1 total live
    settle
    t0=$EPOCHREALTIME
    bash_flow "$2" "$3" "$4"
    t1=$EPOCHREALTIME
    total=$(seconds_between "$t0" "$t1")
    live=$(seconds_between "$t0" "$switched")
    record "$key" "$total" "$live" -
    say "  $key $(short_rev "$3"): $total s (live after $live s)"
}

run_checkout() { # run_checkout KEY REV
    local key=$1 t0 t1 total
    settle
    t0=$EPOCHREALTIME
    git --git-dir="$co_git" --work-tree="$co_tree" checkout -q -f "$2"
    t1=$EPOCHREALTIME
    total=$(seconds_between "$t0" "$t1")
    record "$key" "$total" - -
    say "  $key $(short_rev "$2"): $total s"
}

# The floor of the default route: a hard-linked copy of a release (what the default route does
# for every unchanged file, with nothing else: no tree to read, no check, no index), then the
# same sync pushdeploy does before it switches. Removed untimed. The release is the bash flow's
# (the same tree): linking to pushdeploy's own would move its files' ctimes, and its index
# would rightly distrust all of them at the next deploy.
run_link_floor() { # run_link_floor KEY
    local key=$1 t0 t1 total
    settle
    t0=$EPOCHREALTIME
    cp -al "$bash_target/public_html/" "$work/floor"
    sync -f "$work/floor"
    t1=$EPOCHREALTIME
    rm -rf -- "$work/floor"
    total=$(seconds_between "$t0" "$t1")
    record "$key" "$total" - -
    say "  $key: $total s"
}

short_rev() {
    case $1 in
    "$commit_a") echo A ;;
    "$commit_b") echo B ;;
    *) echo C ;;
    esac
}

# The keep_previous target deploys A, B, C, A, ...: $keep_next indexes what it deployed last.
cycle=("$commit_a" "$commit_b" "$commit_c")
keep_next=0

# Every contender starts and ends with A live (or checked out).
contenders=(pd_first bash_first sync_first pd_switch keep_switch bash_switch sync_switch checkout_switch link_floor)
run_contender() {
    case $1 in
    pd_first)
        settle # a detached removal still at work must not overlap the reset or the deploy
        reset_target "$pd_target"
        run_pushdeploy pd_first "$commit_a"
        ;;
    keep_switch)
        for _ in 1 2; do
            keep_next=$(((keep_next + 1) % 3))
            run_pushdeploy keep_switch "${cycle[keep_next]}" "$keep_bare"
        done
        ;;
    bash_first)
        reset_target "$bash_target"
        run_bash_flow bash_first "$bash_target" "$commit_a" 0
        ;;
    sync_first)
        reset_target "$sync_target"
        run_bash_flow sync_first "$sync_target" "$commit_a" 1
        ;;
    pd_switch)
        run_pushdeploy pd_switch "$commit_b"
        run_pushdeploy pd_switch "$commit_a"
        ;;
    bash_switch)
        run_bash_flow bash_switch "$bash_target" "$commit_b" 0
        run_bash_flow bash_switch "$bash_target" "$commit_a" 0
        ;;
    sync_switch)
        run_bash_flow sync_switch "$sync_target" "$commit_b" 1
        run_bash_flow sync_switch "$sync_target" "$commit_a" 1
        ;;
    checkout_switch)
        run_checkout checkout_switch "$commit_b"
        run_checkout checkout_switch "$commit_a"
        ;;
    link_floor)
        run_link_floor link_floor
        run_link_floor link_floor
        ;;
    esac
}

# --- Runs ------------------------------------------------------------------------------------

say "bringing every contender to A (untimed)"
# The keep_previous target goes through C first, so that its idle slot holds C, not B.
for deploy in "$bare $commit_a" "$keep_bare $commit_c" "$keep_bare $commit_a"; do
    # shellcheck disable=SC2086 # repository and revision
    "$pushdeploy" deploy --repo $deploy 2>"$logs/pushdeploy.log" ||
        die "pushdeploy deploy failed: $(cat "$logs/pushdeploy.log")"
done
bash_flow "$bash_target" "$commit_a" 0
bash_flow "$sync_target" "$commit_a" 1
git --git-dir="$co_git" --work-tree="$co_tree" checkout -q -f "$commit_a"

load_start=$(cut -d ' ' -f 1-3 /proc/loadavg)
# Round 0 warms the page cache (the repository's pack, the binary) and is not counted. Each
# round starts one contender further along, so that none always runs right after the same one.
for ((round = 0; round <= rounds; round++)); do
    round_started=$SECONDS
    if ((round == 0)); then
        say "warm-up round (not counted)"
    else
        say "round $round/$rounds"
    fi
    recording=$((round > 0))
    for ((i = 0; i < ${#contenders[@]}; i++)); do
        run_contender "${contenders[(round + i) % ${#contenders[@]}]}"
    done
    if ((round == 0)); then
        # Every contender must have produced the same tree, or the comparison means nothing.
        diff -r -q "$pd_target/public_html/" "$bash_target/public_html/" >&2 ||
            die "pushdeploy's release differs from the bash flow's"
        mkdir "$work/archive"
        git --git-dir="$bare" archive --format=tar "${cycle[keep_next]}" | tar -x -C "$work/archive"
        diff -r -q "$keep_target/public_html/" "$work/archive/" >&2 ||
            die "pushdeploy's release with keep_previous differs from git archive"
        rm -rf -- "$work/archive"
        diff -r -q "$sync_target/public_html/" "$bash_target/public_html/" >&2 ||
            die "the bash flow + sync's release differs from the bash flow's"
        diff -r -q "$co_tree/" "$bash_target/public_html/" >&2 ||
            die "the checked-out tree differs from the bash flow's release"
        say "checked: the five contenders' trees of A are identical"
        # For comparison with pushdeploy's peak RSS: git's own reader of the same pack.
        /usr/bin/time -f %M -o "$logs/archive-rss.txt" git --git-dir="$bare" archive --format=tar "$commit_a" >/dev/null
        archive_rss=$(<"$logs/archive-rss.txt")
    fi
    say "round took $((SECONDS - round_started)) s"
done

load_end=$(cut -d ' ' -f 1-3 /proc/loadavg)

# --- Report ----------------------------------------------------------------------------------

median() { # median VALUES...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

range() { # range VALUES...
    printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.3f–%.3f", lo, hi }'
}

declare -A med_total=() med_live=()
for key in "${contenders[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers
    med_total[$key]=$(median ${total_s[$key]})
    if [[ -n ${live_s[$key]:-} ]]; then
        # shellcheck disable=SC2086
        med_live[$key]=$(median ${live_s[$key]})
    fi
done

fixed() { awk -v v="$1" -v d="$2" 'BEGIN { printf "%.*f", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
peak_mib() { # peak_mib KEY: the largest peak RSS over the samples, in MiB
    # shellcheck disable=SC2086
    printf '%s\n' ${rss_s[$1]} | sort -g | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }'
}

declare -A label=(
    [pd_first]="pushdeploy: first deploy of A"
    [bash_first]="bash flow: first deploy of A"
    [sync_first]="bash flow + sync: first deploy of A"
    [pd_switch]="pushdeploy: switch A↔B"
    [keep_switch]="pushdeploy keep_previous (diff route): switch A↔B"
    [bash_switch]="bash flow: switch A↔B"
    [sync_switch]="bash flow + sync: switch A↔B"
    [checkout_switch]="git checkout -f: switch A↔B (in place, not atomic)"
    [link_floor]="floor of the default route: cp -al of the live release + sync -f"
)

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
fs=$(df -T "$work" | awk 'NR == 2 { print $2 ($1 == $2 ? "" : " (" $1 ")") }')
if command -v findmnt >/dev/null 2>&1; then # add the mount options: discard, journal, ...
    fs+=", mounted $(findmnt -n -o OPTIONS -T "$work" | tail -n 1)"
fi
if [[ $fs == ext4* ]]; then # ext4 without a journal behaves very differently (see bench/README.md)
    device=$(df "$work" | awk 'NR == 2 { print $1 }')
    if compgen -G "/proc/fs/jbd2/${device##*/}-*" >/dev/null; then fs+=", journal"; else fs+=", no journal"; fi
fi
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    revision+=" + uncommitted changes in src/"
fi
elapsed=$((SECONDS - started))

report() {
    local key rss
    echo "| Contender | Samples | Median total (s) | Range (s) | Median time-to-live (s) | Peak RSS (MiB) |"
    echo "|---|--:|--:|--:|--:|--:|"
    for key in "${contenders[@]}"; do
        rss="–"
        if [[ -n ${rss_s[$key]:-} ]]; then rss=$(peak_mib "$key"); fi
        # shellcheck disable=SC2086
        printf '| %s | %d | %s | %s | %s | %s |\n' "${label[$key]}" "$(wc -w <<<"${total_s[$key]}")" \
            "$(fixed "${med_total[$key]}" 3)" "$(range ${total_s[$key]})" \
            "$(if [[ -n ${med_live[$key]:-} ]]; then fixed "${med_live[$key]}" 3; else echo –; fi)" "$rss"
    done
    echo
    echo "| Ratio of medians | Total | Time-to-live | Goal (issue 16) |"
    echo "|---|--:|--:|--:|"
    printf '| first deploy: pushdeploy / bash flow | %s | %s | ≤ 1.0× |\n' \
        "$(ratio "${med_total[pd_first]}" "${med_total[bash_first]}")" \
        "$(ratio "${med_live[pd_first]}" "${med_live[bash_first]}")"
    printf '| first deploy: pushdeploy / bash flow + sync | %s | %s | |\n' \
        "$(ratio "${med_total[pd_first]}" "${med_total[sync_first]}")" \
        "$(ratio "${med_live[pd_first]}" "${med_live[sync_first]}")"
    printf '| switch, default: pushdeploy / bash flow (total: what the pusher waits) | %s | %s | ≤ 0.1× (total) |\n' \
        "$(ratio "${med_total[pd_switch]}" "${med_total[bash_switch]}")" \
        "$(ratio "${med_live[pd_switch]}" "${med_live[bash_switch]}")"
    printf '| switch, default: pushdeploy / bash flow + sync | %s | %s | |\n' \
        "$(ratio "${med_total[pd_switch]}" "${med_total[sync_switch]}")" \
        "$(ratio "${med_live[pd_switch]}" "${med_live[sync_switch]}")"
    printf '| switch, keep_previous: pushdeploy / git checkout -f (to live; total) | %s | %s | ≤ 2× (to live) |\n' \
        "$(ratio "${med_total[keep_switch]}" "${med_total[checkout_switch]}")" \
        "$(ratio "${med_live[keep_switch]}" "${med_total[checkout_switch]}")"
    printf '| switch, default: pushdeploy / git checkout -f | %s | | |\n' \
        "$(ratio "${med_total[pd_switch]}" "${med_total[checkout_switch]}")"
    printf '| floor of the default route (cp -al + sync) / bash flow | %s | | |\n' \
        "$(ratio "${med_total[link_floor]}" "${med_total[bash_switch]}")"
    printf '| switch, default: pushdeploy / its floor (cp -al + sync) | %s | | |\n' \
        "$(ratio "${med_total[pd_switch]}" "${med_total[link_floor]}")"
    echo
    printf 'Peak RSS of pushdeploy: %s MiB (first deploy), %s MiB (switch), %s MiB (keep_previous switch); goal ≤ 64 MiB. ' \
        "$(peak_mib pd_first)" "$(peak_mib pd_switch)" "$(peak_mib keep_switch)"
    # shellcheck disable=SC2016 # the backquotes are markdown
    printf 'Peak RSS counts the file pages a process maps, such as those of the repository pack (%d MiB); for comparison, `git archive` of A alone peaks at %s MiB.\n' \
        "$pack_mib" "$(awk -v k="$archive_rss" 'BEGIN { printf "%.1f", k / 1024 }')"
    echo
    printf -- '- Site: %d files, %d MiB (%s); B changes 10 pages\n' \
        "$site_files" "$site_mib" "$site_text"
    printf -- '- Rounds: %d, interleaved, after 1 warm-up round not counted (page cache not dropped); switches give 2 samples per round (A→B, B→A)\n' "$rounds"
    printf -- '- Machine: %s, %s CPUs (nproc), %s RAM, Linux %s, temp dir on %s\n' \
        "$cpu" "$(nproc)" "$mem" "$(uname -r)" "$fs"
    printf -- '- Load average (1, 5, 15 min): %s at the start of the rounds, %s at the end\n' \
        "$load_start" "$load_end"
    printf -- '- Tools: %s, %s\n' "$(git --version)" "$(tar --version | head -n 1)"
    printf -- '- pushdeploy: %s; run on %s, took %d s (including the build)\n' \
        "$revision" "$(date -u +%Y-%m-%d)" "$elapsed"
}

if [[ -n $out ]]; then
    report | tee "$out"
    say "wrote $out"
else
    report
fi
