#!/usr/bin/env bash
# Set up everything `make demo`, `make test`, `make bench` and `make lint` need:
# the Debian packages that are missing (apt-get, through sudo when not root)
# and a virtual environment in .venv with linerec and its extras installed.
# Safe to run again: it does nothing when all is in place.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  mosquitto mosquitto-clients   # the broker the tests and a real install use
  age                           # the stock age tool, for interop and for decrypting by hand
  libportaudio2 libasound2-plugins  # PortAudio for sounddevice; ALSA file plugin for tests
  pulseaudio pulseaudio-utils   # a FIFO-paced, real-time audio source for the capture tests
  sox espeak-ng                 # audio peer and the demo's voices
  minimodem multimon-ng         # caller ID / DTMF peers
  flac                          # the reference FLAC decoder
  chromium                      # the browser the web review tests drive through Playwright
)

python=${PYTHON:-python3}

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: linerec needs Python 3.11 or newer; $("$python" --version) found" >&2
  exit 1
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv"
  "$python" -m venv .venv
fi

# Reinstall only when the project's metadata changed since the last install.
stamp=.venv/.linerec-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "bootstrap: installing linerec and its extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[device,agent,hardware,demo,dev]'
  echo "$want" >"$stamp"
fi
