# Shared by the infra scripts (sourced, never run): where the checkout, its local state
# and the build cache are, logging to stderr with the script's tag, and installing from apt
# with sudo only when not already root (updating the package lists once if the first try fails).
# The sourcing script sets LOG_TAG first.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${REALTYBOT_STATE_DIR:-$ROOT/.local}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/realtybot"

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_install() {
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
    { sudo_if_needed apt-get update -q >/dev/null &&
      sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}
