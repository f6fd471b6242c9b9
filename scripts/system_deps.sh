#!/usr/bin/env bash
# Install the Debian packages that the desktop-window and browser tests drive, and the
# Fashion-MNIST files the tests train on, if missing.
# Needs root (as on CI); without it, says which command to run and carries on.
set -euo pipefail
needed=()
command -v Xvfb >/dev/null || needed+=(xvfb)
command -v xdotool >/dev/null || needed+=(xdotool)
command -v chromium >/dev/null || needed+=(chromium)
command -v xwd >/dev/null || needed+=(x11-apps)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || needed+=(dataset-fashion-mnist)
[ ${#needed[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing ${needed[*]}: run 'sudo apt-get install -y ${needed[*]}' (the GUI, browser and Fashion-MNIST tests need them)" >&2
  exit 0
fi
echo "installing ${needed[*]} from Debian"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null; }; then
  echo "warning: could not install ${needed[*]}; the tests that drive them will say so" >&2
fi
