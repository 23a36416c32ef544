#!/usr/bin/env bash
# otpmint and OtpMint (the Flask service it replaces) through the same relay, load generator
# and client counts, interleaved in one run (docs/benchmarks.md, "Side by side with OtpMint").
#
#   scripts/side-by-side.sh /path/to/OtpMint-checkout [extra otpmint-bench arguments]
#
# The OtpMint checkout is copied to a scratch directory; its 10-per-minute limiter is raised
# there so the run is not refused (nothing else is changed). Flask and Flask-Limiter are
# installed from the Python registry into target/otpmint-venv. otpmint runs with
# hashing.algorithm = "hmac-sha256" and with its default argon2id, in release builds.
# Results: target/side-by-side/*.json and a table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: scripts/side-by-side.sh /path/to/OtpMint-checkout [otpmint-bench args]}
shift
extra=("$@")
out=target/side-by-side
mkdir -p "$out"
venv=target/otpmint-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'flask==3.1.*' 'flask-limiter==4.1.*'
fi
cargo build --release --locked --features bench --bin otpmint --bin otpmint-bench
bench=target/release/otpmint-bench

work=$(mktemp -d)
trap 'kill "${flask_pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r "$src"/. "$work/"
sed -i 's/default_limits=\["10 per minute"\]/default_limits=["100000000 per minute"]/' "$work/main.py"
grep -q '100000000 per minute' "$work/main.py" || { echo "could not raise OtpMint's limiter"; exit 1; }
port=5000
root=$PWD
(cd "$work" && exec "$root/$venv/bin/python" main.py >"$work/flask.log" 2>&1) &
flask_pid=$!
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done

run() { # name, then otpmint-bench arguments
  local name=$1
  shift
  "$bench" --json "$out/$name.json" "$@" "${extra[@]}" > "$out/$name.txt"
}
for c in 1 8 64; do
  run "otpmint-mint-c$c" --scenarios compat-mint --concurrency "$c" --duration 5 --hashing-algorithm hmac-sha256
  run "OtpMint-mint-c$c" --otpmint-port $port --scenarios compat-mint --concurrency "$c" --duration 5
done
for kind in wrong right; do
  run "otpmint-verify-$kind" --scenarios "compat-verify-$kind" --concurrency 64 --duration 2 --hashing-algorithm hmac-sha256
  run "OtpMint-verify-$kind" --otpmint-port $port --scenarios "compat-verify-$kind" --concurrency 64 --duration 2
  run "otpmint-argon2id-verify-$kind" --scenarios "compat-verify-$kind" --concurrency 64 --duration 2
done

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def rps(name):
    r = json.load(open(os.path.join(out, name + ".json")))["results"][0]
    return r["rps"], r["p50_ms"], r["statuses"]
print("| scenario | c | OtpMint req/s (p50 ms) | otpmint hmac-sha256 req/s (p50 ms) | ratio |")
print("|---|---|---|---|---|")
for c in (1, 8, 64):
    a, b = rps(f"OtpMint-mint-c{c}"), rps(f"otpmint-mint-c{c}")
    print(f"| compat-mint | {c} | {a[0]:.0f} ({a[1]:.1f}) | {b[0]:.0f} ({b[1]:.1f}) | {b[0]/a[0]:.1f}× |")
for kind in ("wrong", "right"):
    a, b = rps(f"OtpMint-verify-{kind}"), rps(f"otpmint-verify-{kind}")
    g = rps(f"otpmint-argon2id-verify-{kind}")
    print(f"| compat-verify-{kind} | 64 | {a[0]:.0f} ({a[1]:.1f}) {a[2]} | {b[0]:.0f} ({b[1]:.1f}) {b[2]} | {b[0]/a[0]:.1f}× (argon2id: {g[0]:.0f}, {g[0]/a[0]:.1f}×) |")
PY
