#!/usr/bin/env bash
# The README's two commands:  packaging/dev.sh demo  |  packaging/dev.sh test
# Works on a fresh Debian / Ubuntu / Raspberry Pi OS machine with Python 3.11+.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${EDGEPUSH_VENV:-$root/.venv}

# Debian packages the test suite talks to: a real broker, a real notification daemon on a
# virtual screen, a D-Bus session bus, and Tk for the history window.
APT_TEST=(mosquitto mosquitto-clients dunst xvfb dbus dbus-x11 xdotool x11-utils trayer xclip
          libnotify-bin python3-tk iproute2 systemd dpkg-dev lintian binutils
          imagemagick    # `import` takes the screenshots in tests/desktop.py
          rabbitmq-server nats-server)  # MQTT brokers beside mosquitto (tests/brokers.py)
# PyInstaller (tests/test_packaging.py) bundles the shared libpython of the venv's Python.
APT_TEST+=("libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3)")
APT_TEST+=(chromium fonts-noto-color-emoji)  # the web app's browser tests (Playwright) and its emoji
APT_TEST+=(curl util-linux)  # curl -T uploads, and mount for a full tmpfs (tests/test_relay_attachments.py)
# The tray on a StatusNotifierItem host (tests/test_tray_sni.py): a real host and a bare
# watcher, the AppIndicator typelib pystray's appindicator backend loads, and what pip needs
# to build PyGObject and pycairo (the dev extra) against them.
APT_TEST+=(haskell-gtk-sni-tray-utils haskell-status-notifier-item-utils gir1.2-ayatanaappindicator3-0.1
           libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev)

# The tests start their own RabbitMQ and NATS (tests/brokers.py). rabbitmq-server's postinst
# starts the Debian service (node rabbit@host, epmd on 4369, AMQP on 5672): stop it and keep
# it off, so nothing runs that the tests did not start. Without systemd (a CI container) the
# postinst could not start it and there is nothing to do.
quiet_packaged_brokers() {
  [ -d /run/systemd/system ] || return 0
  local svc
  for svc in rabbitmq-server nats-server; do
    if systemctl is-enabled --quiet "$svc" 2>/dev/null || systemctl is-active --quiet "$svc" 2>/dev/null; then
      need_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
}

need_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  # One dpkg-query for all of them (17 separate calls were a noticeable share of a quick run).
  local installed missing=()
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null | awk '/ ok installed$/ {print $1}' || true)
  for p in "$@"; do grep -qx -- "$p" <<<"$installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "==> installing Debian packages: ${missing[*]}"
  need_root apt-get update -qq
  need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

make_venv() {
  local extras=$1
  # A venv installed from this very pyproject.toml with these extras is current: skip pip
  # (it took 12 s per call even with nothing to do). The stamp lives in the venv, so a new
  # venv, a changed pyproject.toml or other extras install again.
  local stamp="$venv/.edgepush-installed-$extras" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "edgepush needs Python 3.11 or newer (found $(python3 --version))" >&2; exit 1
  fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  echo "==> installing edgepush[$extras] into $venv"
  # pip's own output (setuptools' editable-install notice on every fresh venv) goes to a log,
  # shown only when the install fails: a first run prints what the user needs, not that.
  if ! "$venv/bin/python" -m pip install -q -e ".[$extras]" > "$venv/pip-install.log" 2>&1; then
    cat "$venv/pip-install.log" >&2
    echo "pip install failed (its output above, kept in $venv/pip-install.log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
}

case "${1:-}" in
  demo)
    make_venv relay
    exec "$venv/bin/python" -m edge_relay.demo "${@:2}"
    ;;
  test)
    apt_install "${APT_TEST[@]}"
    quiet_packaged_brokers
    make_venv dev
    exec "$venv/bin/python" -m pytest "${@:2}"
    ;;
  *)
    echo "usage: $0 demo|test [args...]" >&2; exit 2 ;;
esac
