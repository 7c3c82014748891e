#!/usr/bin/env bash
# Builds and installs pushdeploy; with --demo, also deploys a demo site end to end.
#
#   ./install.sh                      build and install into /usr/local/bin (or ~/.local/bin)
#   ./install.sh --prefix DIR         install into DIR/bin
#   ./install.sh --demo [DIR]         install, then push a demo site (default ~/pushdeploy-demo)
#   ./install.sh --git-user git [--key FILE]
#                                     also create the system user 'git' (login shell git-shell,
#                                     unlocked for key logins, ~/.ssh/authorized_keys) and add
#                                     the public key(s) in FILE; installs ~/git-shell-commands
#                                     (`ssh git@server status|log|show SITE`, read-only)
#   ./install.sh --site NAME --target DIR [--template hugo|static] [--repos /srv/git]
#                                     also set up the bare repository REPOS/NAME.git for DIR
#   ./install.sh --uninstall          remove the binary an earlier install put in place
#                                     (users, repositories and sites are left alone)
set -euo pipefail

usage() { sed -n '2,16s/^# \{0,1\}//p' "$0"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*" >&2; }

prefix=""
demo=""
uninstall=false
git_user=""
site=""
site_target=""
site_template=""
repos=/srv/git
keys=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --demo)
      if [ $# -ge 2 ] && [ "${2#-}" = "$2" ]; then demo="$2"; shift 2; else demo="$HOME/pushdeploy-demo"; shift; fi ;;
    --demo=*) demo="${1#--demo=}"; shift ;;
    --uninstall) uninstall=true; shift ;;
    --git-user) [ $# -ge 2 ] || die "--git-user needs a user name"; git_user="$2"; shift 2 ;;
    --key) [ $# -ge 2 ] || die "--key needs a public key file"; keys+=("$2"); shift 2 ;;
    --site) [ $# -ge 2 ] || die "--site needs a name"; site="$2"; shift 2 ;;
    --target) [ $# -ge 2 ] || die "--target needs a directory"; site_target="$2"; shift 2 ;;
    --template) [ $# -ge 2 ] || die "--template needs static or hugo"; site_template="$2"; shift 2 ;;
    --repos) [ $# -ge 2 ] || die "--repos needs a directory"; repos="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

if [ -z "$prefix" ]; then
  if [ -w /usr/local/bin ] || [ "$(id -u)" -eq 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)
bin="$prefix/bin/pushdeploy"
manifest="$prefix/share/pushdeploy/installed-files"

if $uninstall; then
  [ -f "$manifest" ] || die "nothing to uninstall: $manifest does not exist (was it installed with --prefix?)"
  while IFS= read -r entry; do
    case "$entry" in
      user:*) say "left in place: the user ${entry#user:} (remove it with 'userdel ${entry#user:}' once its repositories are gone)" ;;
      site:*) say "left in place: ${entry#site:} and its target (remove them by hand if you want)" ;;
      *) rm -f -- "$entry" && say "removed $entry" ;;
    esac
  done < "$manifest"
  rm -f -- "$manifest"
  rmdir -- "$prefix/share/pushdeploy" 2>/dev/null || true
  exit 0
fi
[ -z "$site" ] || [ -n "$site_target" ] || die "--site needs --target DIR, the directory the site is served from"
[ ${#keys[@]} -eq 0 ] || [ -n "$git_user" ] || die "--key needs --git-user NAME, the user whose authorized_keys it goes into"
[ ${#keys[@]} -eq 0 ] || [ "$(id -u)" -eq 0 ] || die "--key writes into another user's ~/.ssh, which needs root; run with sudo"
for key in "${keys[@]}"; do
  [ -f "$key" ] || die "--key $key: no such file"
  ! command -v ssh-keygen >/dev/null || ssh-keygen -l -f "$key" >/dev/null 2>&1 || die "--key $key is not a public key (ssh-keygen -l -f $key says so); pass the .pub file"
done
case "$site" in */*|.*) die "--site takes a plain name such as example.com, not '$site'" ;; esac

src=$(cd "$(dirname "$0")" && pwd)
# Cargo.toml's rust-version; Debian 12's `cargo` package is Rust 1.63, too old.
rust_needed=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$src/Cargo.toml")
rust_hint="install Rust $rust_needed or newer: on Debian 12 'apt-get install cargo-web' (its 'cargo' package is 1.63, too old), else rustup (https://rustup.rs)"
command -v cargo >/dev/null || die "cargo is not installed; $rust_hint, and run again"
rust_have=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
if [ -n "$rust_have" ] && [ "$(printf '%s\n%s\n' "$rust_needed" "$rust_have" | sort -V | head -n 1)" != "$rust_needed" ]; then
  die "rustc $rust_have is older than the $rust_needed pushdeploy needs; $rust_hint"
fi
command -v git >/dev/null || die "git is not installed; run 'apt-get install git' and run again"

say "building pushdeploy (cargo build --release)"
cargo build --release --locked --quiet --manifest-path "$src/Cargo.toml"
mkdir -p "$prefix/bin" "$(dirname "$manifest")"
install -m 0755 "${CARGO_TARGET_DIR:-$src/target}/release/pushdeploy" "$bin.new"
mv -f "$bin.new" "$bin"
touch "$manifest"
grep -qxF -- "$bin" "$manifest" || printf '%s\n' "$bin" >> "$manifest"
say "installed $bin ($("$bin" --version))"
# Shell completions and the man page, generated from the binary's own command line.
for generated in "bash-completion/completions/pushdeploy:completions bash" \
                 "zsh/site-functions/_pushdeploy:completions zsh" \
                 "fish/vendor_completions.d/pushdeploy.fish:completions fish" \
                 "man/man1/pushdeploy.1:man"; do
  file="$prefix/share/${generated%%:*}"
  mkdir -p "$(dirname "$file")"
  # shellcheck disable=SC2086 # the subcommand and its argument are two words
  "$bin" ${generated#*:} > "$file.new" && chmod 0644 "$file.new" && mv -f "$file.new" "$file"
  grep -qxF -- "$file" "$manifest" || printf '%s\n' "$file" >> "$manifest"
done
say "installed the man page (man pushdeploy) and completions for bash, zsh and fish in $prefix/share"
case ":$PATH:" in *":$prefix/bin:"*) ;; *) say "note: $prefix/bin is not on your PATH" ;; esac

# The user that owns the repositories and releases: pushes run the hook as this user.
if [ -n "$git_user" ] && ! id -u "$git_user" >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "creating the user '$git_user' needs root; run with sudo"
  shell=$(command -v git-shell) || die "git-shell is not installed; run 'apt-get install git'"
  mkdir -p "$repos"
  # Password '*', not useradd's locked '!': sshd without PAM (UsePAM no) refuses a locked
  # account even for key logins. '*' matches no password, so only keys log in.
  useradd --system --shell "$shell" --home-dir "$repos" --user-group --password '*' "$git_user"
  chown "$git_user:" "$repos"
  printf 'user:%s\n' "$git_user" >> "$manifest"
  say "created the user $git_user (login shell git-shell, home $repos, key logins only)"
fi
if [ -n "$git_user" ] && [ "$(id -u)" -eq 0 ]; then
  home=$(getent passwd "$git_user" | cut -d: -f6)
  [ -n "$home" ] && [ -d "$home" ] || die "the user $git_user has no home directory ($home); create it, owned by $git_user"
  # An earlier install (or useradd) left the account locked: unlock it for key logins only.
  if [ "$(getent shadow "$git_user" | cut -d: -f2)" = "!" ]; then
    usermod -p '*' "$git_user"
    say "unlocked $git_user for key logins (its password was '!', which sshd refuses without PAM; it is now '*', which matches no password)"
  fi
  group=$(id -gn "$git_user")
  install -d -m 0700 -o "$git_user" -g "$group" "$home/.ssh"
  [ -e "$home/.ssh/authorized_keys" ] || install -m 0600 -o "$git_user" -g "$group" /dev/null "$home/.ssh/authorized_keys"
  for key in "${keys[@]}"; do
    while IFS= read -r line; do
      [ -n "$line" ] || continue
      if grep -qxF -- "$line" "$home/.ssh/authorized_keys"; then
        say "already authorized for $git_user: ${line:0:40}..."
      else
        printf '%s\n' "$line" >> "$home/.ssh/authorized_keys"
        say "authorized for $git_user: $(ssh-keygen -l -f <(printf '%s\n' "$line") 2>/dev/null || echo "${line:0:40}...")"
      fi
    done < "$key"
  done
  # `ssh git@server status|log|show SITE`: git-shell runs ~/git-shell-commands/NAME.
  commands="$home/git-shell-commands"
  install -d -m 0755 -o root -g root "$commands"
  for name in status log show no-interactive-login; do
    sed "s|@PUSHDEPLOY@|$bin|" "$src/hooks/git-shell-command" > "$commands/$name.new"
    chmod 0755 "$commands/$name.new" && mv -f "$commands/$name.new" "$commands/$name"
  done
  say "~$git_user/.ssh/authorized_keys ($(grep -c . "$home/.ssh/authorized_keys" || true) key(s)) and git-shell-commands (status, log, show) are in place in $home"
elif [ -n "$git_user" ]; then
  say "not root: ~$git_user/.ssh and ~$git_user/git-shell-commands were left as they are (run with sudo to set them up)"
fi

if [ -n "$site" ]; then
  owner=${git_user:-$(id -un)}
  repo="$repos/$site.git"
  mkdir -p "$repos" "$site_target"
  if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ]; then
    chown "$owner:" "$site_target"
    run_as=(runuser -u "$owner" --)
    [ -d "$repo" ] || { mkdir -p "$repo" && chown "$owner:" "$repo"; }
  else
    run_as=()
  fi
  "${run_as[@]}" "$bin" init "$repo" --target "$(cd "$site_target" && pwd)" ${site_template:+--template "$site_template"}
  grep -qxF -- "site:$repo" "$manifest" || printf 'site:%s\n' "$repo" >> "$manifest"
  say "site $site: push to ssh://$owner@$(hostname -f 2>/dev/null || hostname)$repo, serve $(cd "$site_target" && pwd)/public_html (see site-templates/servers/)"
fi

[ -n "$demo" ] || exit 0

# The demo: a bare repository, a target, a site from a template, and a real `git push`.
mkdir -p "$demo"
demo=$(cd "$demo" && pwd)
if command -v hugo >/dev/null; then
  template=hugo
else
  template=static
  say "hugo is not installed, so the demo uses the static template ('apt-get install hugo' for the Hugo one)"
fi
"$bin" init "$demo/site.git" --target "$demo/www" --template "$template" --force
git_id=(-c user.name="${GIT_AUTHOR_NAME:-pushdeploy demo}" -c user.email="${GIT_AUTHOR_EMAIL:-demo@localhost}")
if [ ! -d "$demo/site/.git" ]; then
  "$bin" new-site "$template" "$demo/site" --remote "$demo/site.git"
else
  # A second run pushes a new commit, so it deploys again (into the other slot).
  stamp="Demo run at $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  case "$template" in
    hugo) page="$demo/site/content/about.md" ;;
    *) page="$demo/site/about.html" ;;
  esac
  printf '\n%s\n' "$stamp" >> "$page"
  git -C "$demo/site" "${git_id[@]}" commit -q -am "$stamp"
fi
git -C "$demo/site" push production main
"$bin" status --repo "$demo/site.git"
cat >&2 <<EOT

install.sh: the demo site is live in $demo/www/public_html
  see it:     python3 -m http.server --directory $demo/www/public_html 8080   (then open http://127.0.0.1:8080/)
  serve it:   point Apache, nginx or Caddy at $demo/www/public_html (site-templates/servers/)
  deploy:     edit $demo/site, commit, and run: git -C $demo/site push production main
EOT
