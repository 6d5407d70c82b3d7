#!/bin/sh
# tests/startup.sh [N]: Neovim start-up time with and without this plugin on 'runtimepath'
# (installed, unused), N runs each (default 20), alternating, from `nvim --startuptime`.
# Prints total start-up times (noisy on a loaded machine) and, steadier, the time spent
# sourcing plugin/opensandbox.lua. Timing only: nothing here asserts a number.
set -eu
n=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
i=0
while [ $i -lt "$n" ]; do
  nvim --headless --clean --startuptime "$tmp/without.$i" +qa! </dev/null >/dev/null 2>&1
  nvim --headless --clean --cmd "set rtp^=$here" --startuptime "$tmp/with.$i" +qa! </dev/null >/dev/null 2>&1
  i=$((i + 1))
done
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
minimum() { sort -n | head -1; }
total() { for f in "$tmp"/$1.*; do awk '/editing files in windows/ {print $1}' "$f"; done; }
# Sourcing time of plugin/opensandbox.lua (self+sourced), and the clock from the line before
# it to its line: what the plugin adds to start-up, without the noise of the whole run.
plugin() { for f in "$tmp"/with.*; do awk '/opensandbox.lua/ {print $2}' "$f"; done; }
gap() { for f in "$tmp"/with.*; do awk '/opensandbox.lua/ {printf "%.3f\n", $1 - prev} {prev = $1}' "$f"; done; }
echo "runs: $n each (alternating)"
echo "start-up without plugin: median $(total without | median) ms, min $(total without | minimum) ms"
echo "start-up with plugin:    median $(total with | median) ms, min $(total with | minimum) ms"
echo "sourcing plugin/opensandbox.lua: median $(plugin | median) ms"
echo "clock from the previous start-up step to the end of it: median $(gap | median) ms"
