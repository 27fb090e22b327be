#!/usr/bin/env bash
# Set up LOEV Explorer in ./.venv on a fresh Debian machine with Python 3.11.
# As root it also installs the system libraries the app needs: PortAudio for sound,
# the xcb libraries for Qt's window plugin, and a small General MIDI soundfont that
# the trainer's tests render with.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv libportaudio2
  libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0
  libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0
  libegl1 libgl1 libfontconfig1 libdbus-1-3 libglib2.0-0
  timgm6mb-soundfont
)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# hnswlib compiles from source: no -march=native, so a cached wheel or a bundle runs on other CPUs.
export HNSWLIB_NO_NATIVE=1
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
# tinysoundfont's wheel declares no usable dependencies of its own (numpy is already here).
.venv/bin/python -m pip install -q --no-deps tinysoundfont
echo "setup: done; run .venv/bin/loev" >&2
