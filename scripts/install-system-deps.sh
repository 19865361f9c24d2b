#!/usr/bin/env bash
# Install the Debian packages the lab (python -m lab) and the tests need.
# Idempotent: does nothing when everything is installed; runs `apt-get update`
# only when a package is missing.
set -euo pipefail

PACKAGES=(
  mmdebstrap              # builds the lab's Debian sid root (Asterisk 22)
  debian-archive-keyring  # ... and verifies it
  sip-tester              # sipp: the devices, carrier and callers of the tests
  openssh-client          # ssh to the lab hosts, ssh-keygen
  iproute2                # ip netns / ip link
  util-linux              # nsenter, unshare, mount
  make
  git                     # the user-repo test makes a git repository
)

# Node.js and npm: ECMA-262 regular expressions (what editors run) in the schema pattern test, and
# Mermaid's own parser for the merge-request plan's diagrams (tests/mermaid).
# Taken from Debian only when the machine has none (its image may bring its own build).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system-deps: all installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
