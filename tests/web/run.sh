#!/usr/bin/env bash
# The browser test of the page at GET /, from a fresh machine:
#   1. installs Debian's Chromium (and a CJK font for a legible screenshot) if missing,
#   2. installs playwright-core from tests/web/package-lock.json (npm ci),
#   3. starts `senti serve` on a free loopback port and waits for /readyz,
#   4. runs tests/web/page.test.mjs with node's test runner (screenshot: tests/web/screenshot.png).
# Usage, from anywhere: bash tests/web/run.sh
# Env: SENTI_BIN (default target/debug/senti, built by `cargo build -p senti-node`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SENTI_BIN="${SENTI_BIN:-target/debug/senti}"
READY_TIMEOUT_S=60

# 1. Chromium from Debian (Playwright's own browser download does not work here).
packages=()
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
if ! { command -v fc-list >/dev/null && fc-list :lang=zh | grep -q .; }; then
  packages+=(fonts-wqy-microhei) # without a CJK font the screenshot shows boxes (the test passes either way)
fi
if ((${#packages[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    if [[ -x /usr/bin/chromium ]]; then
      echo "run.sh: note: no CJK font; the screenshot will show boxes (as root: apt-get install fonts-wqy-microhei)" >&2
    else
      echo "run.sh: /usr/bin/chromium is missing and I am not root; install it first:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium fonts-wqy-microhei" >&2
      exit 1
    fi
  else
    echo "run.sh: installing ${packages[*]} with apt-get" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
  fi
fi

# 2. playwright-core, pinned by the lockfile.
if ! command -v node >/dev/null || (($(node -p 'process.versions.node.split(".")[0]') < 20)); then
  echo "run.sh: node 20 or newer is needed (playwright-core and node --test)" >&2
  exit 1
fi
(cd tests/web && npm ci --no-audit --no-fund)

# 3. The server, on a free port, stopped whatever happens next.
if [[ ! -x "$SENTI_BIN" ]]; then
  echo "run.sh: $SENTI_BIN not found; build it (cargo build -p senti-node) or set SENTI_BIN" >&2
  exit 1
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
SENTI_URL="http://127.0.0.1:$PORT"
LOG="$(mktemp "${TMPDIR:-/tmp}/senti-web-test.XXXXXX.log")"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  rm -f "$LOG"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NO_COLOR=1 "$SENTI_BIN" serve --listen "127.0.0.1:$PORT" >"$LOG" 2>&1 &
server_pid=$!
echo "run.sh: started $SENTI_BIN (pid $server_pid) on $SENTI_URL; waiting up to ${READY_TIMEOUT_S}s for /readyz" >&2

start=$SECONDS
deadline=$((start + READY_TIMEOUT_S))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$SENTI_URL/readyz" || true)" == 200 ]]; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run.sh: the server exited before it was ready; its log:" >&2
    cat "$LOG" >&2
    exit 1
  fi
  if grep -q "known-answer check failed" "$LOG"; then
    echo "run.sh: the model failed the known-answer check, so /readyz stays 503 (an undertrained model?):" >&2
    grep "known-answer check failed" "$LOG" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "run.sh: /readyz did not answer 200 within ${READY_TIMEOUT_S}s; the server's log:" >&2
    tail -n 50 "$LOG" >&2
    exit 1
  fi
  sleep 0.5
done
echo "run.sh: ready after $((SECONDS - start))s" >&2

# 4. The test.
status=0
SENTI_URL="$SENTI_URL" node --test tests/web/page.test.mjs || status=$?
if ((status != 0)); then
  echo "run.sh: the browser test failed; the server's log (last 50 lines):" >&2
  tail -n 50 "$LOG" >&2
fi
exit "$status"
