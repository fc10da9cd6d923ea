#!/usr/bin/env bash
# Proves the README's two commands on a bare Debian 12, as a newcomer runs them:
#   1. debootstrap a minimal bookworm root from the mirror this host's apt uses;
#   2. with network: install only the README's prerequisites, add this host's
#      Rust toolchain (bind-mounted read-only) and CA certificates, clone the
#      project at HEAD, `cargo fetch`, and let setup.sh install its packages;
#   3. without network, in private network, PID and mount namespaces (so none
#      of this host's servers is visible) and with a fresh /run as after a boot:
#      the README's two commands, then setup.sh again, which must do nothing.
# Ends with PASS, or FAIL and the failing step's last output lines.
#
#   sudo scripts/fresh-machine-check.sh [WORKDIR]
#
# Needs root and takes tens of minutes; not part of `make test`. WORKDIR
# (default: a new /var/tmp/mn-fresh.*) keeps one log per step; its root is
# removed after a pass unless KEEP=1, and kept after a failure.
set -euo pipefail

say() { printf '[fresh] %s\n' "$*"; }

# step NAME COMMAND...: run COMMAND with its output in $work/NAME.log.
step() {
  local name=$1 start=$SECONDS; shift
  say "$name ..."
  if "$@" >"$work/$name.log" 2>&1; then
    say "$name: ok ($((SECONDS - start)) s)"
    # The test runners' closing lines, or else the last line.
    { grep -E '^test result:|tests passed|[0-9]+ passed' "$work/$name.log" ||
        tail -n 1 "$work/$name.log"; } | sed 's/^/    /'
  else
    say "$name: FAILED after $((SECONDS - start)) s; from $work/$name.log:"
    # What failed (a test runner's report), then how it ended.
    grep -E -A 5 'FAILED|panicked|Failure/Error|^error' "$work/$name.log" | head -n 40 | sed 's/^/    /'
    say "last lines:"
    tail -n 30 "$work/$name.log" | sed 's/^/    /'
    say "FAIL (the root is kept in $work)"
    exit 1
  fi
}

# in_root SHELL-COMMAND: run in the root with a clean login-like environment.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive ${offline:+CARGO_NET_OFFLINE=true} \
    bash -c "$1"
}

# Mounts for one phase, in that phase's own mount namespace (gone with it).
mount_root() {
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
  mount --rbind /sys "$root/sys"
  mkdir -p "$root/opt/rust"
  mount --bind "$toolchain" "$root/opt/rust"
  mount -o remount,bind,ro "$root/opt/rust"
}

# The first URI this host's apt uses for bookworm itself (Debian's registry).
debian_mirror() {
  {
    sed -n 's/^deb \(\[[^]]*\] \)\?\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list \
      /etc/apt/sources.list.d/*.list 2>/dev/null
    awk -v RS= -F '\n' '{
      uri = ""; ours = 0
      for (i = 1; i <= NF; i++) {
        n = split($i, w, " ")
        if (w[1] == "URIs:") uri = w[2]
        if (w[1] == "Suites:") for (j = 2; j <= n; j++) if (w[j] == "bookworm") ours = 1
      }
      if (ours && uri != "") print uri
    }' /etc/apt/sources.list.d/*.sources 2>/dev/null
  } | head -n 1
}

phase_online() {
  mount_root
  step prerequisites in_root 'apt-get update && apt-get install -y git make gcc ca-certificates'
  step clone in_root 'git clone -q /tmp/mongoose_native.bundle /root/mongoose_native && git -C /root/mongoose_native log -1 --oneline'
  step cargo-fetch in_root 'cd /root/mongoose_native && cargo fetch'
  step packages in_root 'cd /root/mongoose_native && scripts/setup.sh --install-only'
}

phase_offline() {
  ip link set lo up
  mount_root
  mount -t tmpfs -o mode=755 run "$root/run"   # nothing left from the install
  step isolated check_isolated
  step make-demo in_root 'cd /root/mongoose_native && make demo'
  step make-test in_root 'cd /root/mongoose_native && make test'
  step setup-again in_root 'cd /root/mongoose_native && scripts/setup.sh | tee /dev/stderr | grep -qx "\[setup\] ready: nothing to do"'
}

# Only loopback, and nothing listening yet on the ports the tests use.
check_isolated() {
  ip -o link | awk '{print $2}' | grep -vx 'lo:' && return 1
  for port in 6379 5432 3306 5672; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port answers"; return 1; fi
  done
  echo "only lo, nothing on 6379 5432 3306 5672"
}

[ "$(id -u)" = 0 ] || { echo "needs root (debootstrap, chroot, namespaces)" >&2; exit 2; }

# The two phases run as this script again, inside their namespaces.
if [ "${1:-}" = --phase ]; then
  work=$FRESH_WORK root=$FRESH_WORK/root toolchain=$FRESH_TOOLCHAIN offline=
  [ "$2" = offline ] && offline=1
  "phase_$2"
  exit 0
fi

self=$(readlink -f "$0")
repo=$(cd "$(dirname "$self")/.." && pwd)
toolchain=$(rustc --print sysroot)
mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "no bookworm source found in /etc/apt" >&2; exit 2; }
work=${1:-$(mktemp -d /var/tmp/mn-fresh.XXXXXX)}
root=$work/root
[ ! -e "$root" ] || { echo "$root exists: give a new WORKDIR" >&2; exit 2; }
mkdir -p "$work"
started=$SECONDS
say "root $root, mirror $mirror, Rust $("$toolchain/bin/rustc" --version), project $(git -C "$repo" log -1 --format='%h %s')"

command -v debootstrap >/dev/null || step host-debootstrap apt-get install -y debootstrap
step debootstrap debootstrap --variant=minbase bookworm "$root" "$mirror"

# What a Debian install has and debootstrap leaves out: /etc/hosts naming the
# host (Erlang's -sname nodes resolve it). While installing, a policy-rc.d
# that says no keeps the packages from starting servers on this host's network.
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "$(hostname)" >"$root/etc/hosts"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
# This host's extra CAs, which its route to the registries may need.
cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
git -C "$repo" bundle create "$root/tmp/mongoose_native.bundle" HEAD 2>/dev/null

export FRESH_WORK=$work FRESH_TOOLCHAIN=$toolchain
unshare --mount --fork bash "$self" --phase online || exit 1
rm "$root/usr/sbin/policy-rc.d"
unshare --net --pid --mount --fork bash "$self" --phase offline || exit 1

say "PASS in $((SECONDS - started)) s; logs in $work"
if [ "${KEEP:-0}" = 1 ]; then
  say "root kept in $root"
elif findmnt -rn -o TARGET | grep -q "^$root"; then
  say "something is still mounted under $root: not removing it"
else
  rm -rf "$root"
fi
