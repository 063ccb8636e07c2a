#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the book uses, where apt-get is available:
#   fonts-wqy-microhei     a CJK font, so matplotlib draws Chinese labels
#   chromium               headless browser for the web page test and screenshots
#   dataset-fashion-mnist  out-of-distribution data for the security chapter
# Elsewhere (macOS, no root) it prints what to install by hand and exits 0,
# because every package here is optional for running the notebooks.
set -euo pipefail

packages=(fonts-wqy-microhei chromium dataset-fashion-mnist)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get not found; install a CJK font (e.g. Noto Sans CJK SC) and Chromium by hand: ${missing[*]}"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "not root and no password-less sudo; install by hand: sudo apt-get install ${missing[*]}"
        exit 0
    fi
fi

echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
