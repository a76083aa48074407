# Shared helpers for scripts/test and scripts/test.d/*.sh (sourced, not run).
step() { printf '\n==> %s\n' "$*"; }

# need_apt CMD PKG...: install Debian packages PKG... unless CMD is already on PATH.
# The test command must work on a fresh machine, so every tool it needs is installed here.
need_apt() {
  local cmd=$1; shift
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [ -z "${LOOPHOLE_APT_UPDATED:-}" ]; then
    apt-get update -qq >/dev/null
    export LOOPHOLE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
