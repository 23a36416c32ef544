#!/bin/sh
# Render each built-in HTML template in headless Chromium and write docs/templates/<lang>.png
# (and docs/templates/en.png, shown in docs/templates.md). Not part of CI.
# Needs Debian's chromium (and fonts-noto-cjk for ja/zh): apt-get install chromium fonts-noto-cjk
set -eu
cd "$(dirname "$0")/.."
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium fonts-noto-cjk" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo run --quiet --example render-templates -- "$work"
mkdir -p docs/templates
for page in "$work"/*.html; do
    lang=$(basename "$page" .html)
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$work/profile" --window-size=600,640 \
        --screenshot="$PWD/docs/templates/$lang.png" "file://$page" >/dev/null 2>&1
    echo "docs/templates/$lang.png"
done
