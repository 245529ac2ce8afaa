#!/usr/bin/env bash
# npm_deps.sh: installs the test tools pinned in tests/npm/package-lock.json (playwright-core, dockerfilelint, @redocly/cli) into .deps/npm with `npm ci`, once per lock file.
# Exit status 0 when .deps/npm/node_modules is current, 1 (with a message) when npm is absent or the install failed:
# the tests that need these tools then skip.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
src=tests/npm
dst=$(realpath -m .deps/npm) # the real path: npm ci trips over a prefix reached through a link
stamp=$dst/.installed
if [ -f "$stamp" ] && [ "$stamp" -nt "$src/package-lock.json" ] && [ "$stamp" -nt "$src/package.json" ]; then exit 0; fi
command -v npm >/dev/null || { echo "npm_deps: npm is not installed (Debian: apt-get install npm)" >&2; exit 1; }
mkdir -p "$dst"
cp "$src/package.json" "$src/package-lock.json" "$dst/"
# --ignore-scripts: no package needs an install script, and none may download a browser.
if ! npm ci --prefix "$dst" --no-audit --no-fund --ignore-scripts >"$dst/install.log" 2>&1; then
  echo "npm_deps: npm ci failed (log: $dst/install.log):" >&2
  tail -n 5 "$dst/install.log" >&2
  exit 1
fi
touch "$stamp"
