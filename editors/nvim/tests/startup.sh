#!/bin/sh
# tests/startup.sh [N]: Neovim start-up time with and without this plugin on 'runtimepath'
# (installed, unused), N runs each (default 20), alternating, from `nvim --startuptime`.
# Prints the median total start-up time of each, and the median time spent sourcing
# plugin/opensandbox.lua. Timing only: nothing here asserts a number.
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
total() { for f in "$tmp"/$1.*; do awk '/editing files in windows/ {print $1}' "$f"; done | median; }
plugin() { for f in "$tmp"/with.*; do awk '/opensandbox.lua/ {print $3}' "$f"; done | median; }
echo "runs: $n each (alternating)"
echo "start-up without plugin: $(total without) ms (median)"
echo "start-up with plugin:    $(total with) ms (median)"
echo "sourcing plugin/opensandbox.lua: $(plugin) ms (median, self+sourced)"
