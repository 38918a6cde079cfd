#!/bin/sh
# Install the edgepush relay as a system service on a Debian-family box (Debian, Ubuntu,
# Raspberry Pi OS), from the one-file binary or from pipx. Idempotent: a second run changes
# nothing (the config and the token file are created once and never overwritten).
#
#   sudo packaging/install-relay.sh                       # binary: ./edge-relay or dist/edge-relay
#   sudo packaging/install-relay.sh --binary ~/edge-relay
#   sudo packaging/install-relay.sh --pipx                # pipx install 'edgepush[relay]'
#   sudo packaging/install-relay.sh --upstream mqtts://user@broker.example.org:8883 \
#        --upstream-topic 'home/#'
#   packaging/install-relay.sh --root /tmp/r --binary dist/edge-relay   # into a directory tree
#
# Files: /usr/local/bin/edge-relay, /etc/edge-relay/config.toml, /etc/edge-relay/auth.json
# (token hashes, root-only 0600), /etc/systemd/system/edge-relay.service,
# /etc/sysusers.d/edge-relay.conf, /usr/local/share/man/man1/edge-relay.1.gz (the unit's
# Documentation=man:edge-relay(1)); state in /var/lib/edge-relay (made by systemd).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=""
binary=""
pipx_spec=""
listen="0.0.0.0:8080"
upstream=""
topics=""
token_name="admin"
start=yes

usage() {
  sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  echo "options: --binary PATH | --pipx [SPEC], --root DIR, --listen HOST:PORT," >&2
  echo "         --upstream URL, --upstream-topic T (repeatable), --token-name NAME, --no-start" >&2
  exit 2
}
die() { echo "install-relay: $*" >&2; exit 1; }
say() { echo "install-relay: $*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --pipx) if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then pipx_spec=$2; shift; else pipx_spec=default; fi; shift ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --listen) listen=${2:?--listen needs HOST:PORT}; shift 2 ;;
    --upstream) upstream=${2:?--upstream needs a URL}; shift 2 ;;
    --upstream-topic) topics="$topics${topics:+, }\"${2:?--upstream-topic needs a topic}\""; shift 2 ;;
    --token-name) token_name=${2:?--token-name needs a name}; shift 2 ;;
    --no-start) start=no; shift ;;
    -h|--help) usage ;;
    *) echo "install-relay: unknown option '$1'" >&2; usage ;;
  esac
done

if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
  start=no   # a directory tree, not this machine: enable, but start nothing
elif [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 ...), or give --root DIR to install into a directory"
fi
case $listen in *:[0-9]*) ;; *) die "--listen must be HOST:PORT, not '$listen'" ;; esac

bin="$root/usr/local/bin/edge-relay"
etc="$root/etc/edge-relay"
unit="$root/etc/systemd/system/edge-relay.service"

# put SRC DST MODE: copy only when the content differs, so a rerun leaves files untouched.
put() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    chmod "$3" "$2"
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  cp "$1" "$2.tmp.$$" && chmod "$3" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
  say "wrote ${2#"$root"}"
}

install_binary() {
  if [ -n "$pipx_spec" ]; then
    [ "$pipx_spec" = default ] && pipx_spec="edgepush[relay]"
    if ! command -v pipx >/dev/null 2>&1; then
      [ -z "$root" ] || die "pipx is not installed (apt-get install pipx)"
      say "installing pipx"; apt-get install -y -qq pipx >/dev/null
    fi
    if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
      say "edge-relay already installed by pipx ($("$bin" --version))"
    else
      PIPX_HOME="$root/opt/pipx" PIPX_BIN_DIR="$root/usr/local/bin" pipx install "$pipx_spec"
    fi
    return 0
  fi
  if [ -z "$binary" ]; then
    for candidate in "$here/edge-relay" "$here/../dist/edge-relay" "./edge-relay"; do
      [ -f "$candidate" ] && { binary=$candidate; break; }
    done
  fi
  [ -n "$binary" ] && [ -f "$binary" ] || die "no edge-relay binary found: give --binary PATH or --pipx"
  "$binary" --version >/dev/null 2>&1 || die "$binary does not run on this machine ($(uname -m))"
  put "$binary" "$bin" 0755
}

make_user() {
  conf="$root/etc/sysusers.d/edge-relay.conf"
  put "$here/systemd/edge-relay.sysusers" "$conf" 0644
  if grep -q '^edge-relay:' "$root/etc/passwd" 2>/dev/null; then
    return 0
  fi
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers ${root:+--root="$root"} edge-relay.conf
  elif [ -z "$root" ]; then
    adduser --system --group --home /var/lib/edge-relay --no-create-home edge-relay
  else
    die "systemd-sysusers is needed to create the service user under --root"
  fi
}

write_config() {
  if [ -f "$etc/config.toml" ]; then
    say "kept /etc/edge-relay/config.toml (yours; edit it and restart the service)"
    return 0
  fi
  mkdir -p "$etc"
  tmp="$etc/config.toml.tmp.$$"
  sed "s|^listen = .*|listen = \"$listen\"|" "$here/relay-config.toml" > "$tmp"
  if [ -n "$upstream" ]; then
    sed -i "s|^# upstream = .*|upstream = \"$upstream\"|" "$tmp"
  fi
  if [ -n "$topics" ]; then
    sed -i "s|^# upstream_topics = .*|upstream_topics = [$topics]|" "$tmp"
  fi
  chmod 0644 "$tmp" && mv "$tmp" "$etc/config.toml"
  say "wrote /etc/edge-relay/config.toml"
}

write_unit() {
  tmp=$(mktemp)
  sed "s|/usr/bin/edge-relay|/usr/local/bin/edge-relay|" "$here/systemd/edge-relay.service" > "$tmp"
  put "$tmp" "$unit" 0644
  rm -f "$tmp"
}

write_man() {
  # The unit names man:edge-relay(1); like the .deb's (packaging/deb.py), the page is the
  # installed program's own --help, so it cannot drift from it. gzip -n: same bytes each run.
  page="$root/usr/local/share/man/man1/edge-relay.1.gz"
  tmp=$(mktemp)
  {
    printf '.TH EDGE-RELAY 1 "" "edgepush %s" "User Commands"\n' "$("$bin" --version | cut -d' ' -f2)"
    printf '.SH NAME\nedge-relay \\- ntfy-compatible push hub for the LAN, bridged to a broker\n'
    printf '.SH DESCRIPTION\n.nf\n'
    COLUMNS=78 "$bin" --help | sed -e 's/\\/\\e/g' -e 's/^\([.'"'"']\)/\\\&\1/'
    printf '.fi\n.SH SEE ALSO\n/etc/edge-relay/config.toml, docs/RELAY.md in the source\n'
  } | gzip -9n > "$tmp"
  put "$tmp" "$page" 0644
  rm -f "$tmp"
}

first_token() {
  auth="$etc/auth.json"
  if [ -f "$auth" ]; then
    say "kept /etc/edge-relay/auth.json (tokens exist; add one: edge-relay token add NAME --auth-file /etc/edge-relay/auth.json --read '*' --write '*', then systemctl restart edge-relay)"
    return 0
  fi
  token=$("$bin" token add "$token_name" --auth-file "$auth" --read '*' --write '*') \
    || die "could not create the first token"
  chmod 0600 "$auth"   # root-only; the unit hands the service a copy (LoadCredential=)
  say "first token ('$token_name', read and write on every topic; shown only now):"
  echo "    $token"
}

enable_service() {
  if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$start" = yes ]; then
      systemctl enable --now --quiet edge-relay.service   # starts it if not running, no restart
    else
      systemctl enable --quiet edge-relay.service
    fi
  elif command -v systemctl >/dev/null 2>&1; then
    systemctl ${root:+--root="$root"} enable --quiet edge-relay.service 2>/dev/null \
      || say "could not enable the service here; run: systemctl enable --now edge-relay"
  fi
}

print_url() {
  port=${listen##*:}
  host=${listen%:*}
  case $host in 0.0.0.0|"") host=$(hostname -I 2>/dev/null | awk '{print $1}') ;; esac
  url="http://${host:-localhost}:$port"
  say "relay: $url  (health: $url/v1/health)"
  say "first message: curl -H 'Authorization: Bearer TOKEN' -d 'hello' $url/alerts"
  say "agents: pushagent run --server $url --topic alerts"
}

install_binary
make_user
write_config
write_unit
write_man
first_token
enable_service
print_url
