#!/usr/bin/env bash
# Installs what the mesh needs on Debian: system packages through apt-get.
# Crates come through cargo. Safe to run again.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config   # C toolchain for -sys crates
  util-linux coreutils procps   # tools the tests drive: rev, tr, ...
  iproute2                      # network namespaces in fault tests
  fuse3                         # /dev/fuse helpers (fusermount3)
  python3                       # poll(2) and signal tests drive Python readers
  libvulkan1 mesa-vulkan-drivers  # the Vulkan loader, and lavapipe where there is no GPU
  clang libclang-dev            # bindgen, for ffmpeg-sys-next
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev  # H.264 (libx264) and MP4
  ffmpeg                        # ffprobe and ffmpeg, to check recordings in tests
  man-db                        # man -l, to read and check the manual pages
  sshfs openssh-server          # mesh-bench tree and remote-fs: the baseline, sshfs from a private sshd on loopback
  fio git                       # mesh-bench remote-fs: fio's jobs and git add + commit on a remote directory
  iperf3                        # mesh-bench streams: one iperf3 stream between two processes, the tool users run today
  time                          # mesh-bench startup: GNU time's peak RSS of a command it starts itself
)

need=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# rustfmt and clippy: CI checks format and lints (.ci/run).
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
echo "setup: system packages present"

# The manual pages (man/) and the bash, zsh and fish completions: as root
# in the system's places, otherwise in the user's (see cmd/install.sh).
"$(dirname "$0")/cmd/install.sh"
