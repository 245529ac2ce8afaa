#!/usr/bin/env bash
# it_docs.sh: fails when docs/ drifts from the code: configuration keys (from semipaintd --print-config), metric names (from the C sources), OpenAPI paths and HTTP error codes must each appear in their page.
# Sources are found by content (grep -r over the repository, build folders and tests excluded), not by fixed
# paths, so that moving files between folders does not break the test. Without $BUILD/semipaintd the
# configuration check is skipped with a message; the others need no binary. No daemon is started.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
D="$BUILD/semipaintd"
DOCS=${DOCS:-docs}
passes=0
fails=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
skip() { echo "skip $*"; }
# check PAGE WHAT NAME...: each NAME must appear in PAGE in backticks (`NAME`); one line per check
check() {
  local page=$1 what=$2
  shift 2
  local missing=()
  for n in "$@"; do grep -qF -- "\`$n\`" "$page" || missing+=("$n"); done
  if [ ${#missing[@]} -eq 0 ]; then ok "$page names all $# $what"
  else bad "$page lacks ${#missing[@]} of $# $what: ${missing[*]}"; fi
}
# C sources of the product: every *.c of the repository but builds, dependencies and tests
src_grep() {
  grep -rl --include='*.c' --exclude-dir='build*' --exclude-dir=.deps --exclude-dir=.git \
    --exclude-dir=.train --exclude-dir=tests "$@" . || true
}

for p in README.md http-api.md configuration.md metrics.md weights.md database.md cli.md; do
  if [ -s "$DOCS/$p" ]; then ok "$DOCS/$p exists"; else bad "$DOCS/$p is missing or empty"; fi
done

# ---- configuration keys: every key --print-config prints, as `section.key` ----
if [ -x "$D" ]; then
  cfg=()
  [ -f config/semipaintd.yaml ] && cfg=(-c config/semipaintd.yaml)
  # the defaults and the example file only: no SEMIPAINT_* variable of the caller's environment
  unset_env=()
  while IFS= read -r v; do unset_env+=(-u "$v"); done < <(compgen -e | grep '^SEMIPAINT_' || true)
  if out=$(env "${unset_env[@]}" "$D" "${cfg[@]}" --print-config 2>&1); then
    mapfile -t keys < <(awk '/^[a-z_]+:[[:space:]]*$/ {sub(/:.*/, ""); sec = $0; next}
                             /^  [a-z_]+:/ && sec != "" {k = $1; sub(/:$/, "", k); print sec "." k}' <<< "$out")
    if [ ${#keys[@]} -ge 20 ]; then ok "--print-config printed ${#keys[@]} keys"
    else bad "--print-config printed ${#keys[@]} keys (expected at least 20): has its format changed?"; fi
    [ ${#keys[@]} -gt 0 ] && check "$DOCS/configuration.md" "configuration keys" "${keys[@]}"
  else
    bad "$D ${cfg[*]} --print-config failed: $out"
  fi
else
  skip "configuration keys: $D is not built"
fi

# ---- metric names: every core_metrics_counter/gauge/histogram registration with a literal name ----
mapfile -t mfiles < <(src_grep -E 'core_metrics_(counter|gauge|histogram)[[:space:]]*\(')
metrics=()
if [ ${#mfiles[@]} -gt 0 ]; then
  # newlines folded, so that a call wrapped after its first argument is still found
  mapfile -t metrics < <(cat "${mfiles[@]}" | tr '\n' ' ' |
    grep -oE 'core_metrics_(counter|gauge|histogram)[[:space:]]*\([^,;()]*,[[:space:]]*"[a-zA-Z_:][a-zA-Z0-9_:]*"' |
    sed -E 's/.*"([^"]*)"$/\1/' | sort -u)
fi
if [ ${#metrics[@]} -ge 10 ]; then ok "found ${#metrics[@]} metric names in ${#mfiles[@]} source files"
else bad "found ${#metrics[@]} metric names in the sources (expected at least 10): has the registration call changed?"; fi
if printf '%s\n' "${metrics[@]}" | grep -q '^process_'; then ok "the process_* metrics are among them"
else bad "no process_* metric found in the sources"; fi
[ ${#metrics[@]} -gt 0 ] && check "$DOCS/metrics.md" "metric names" "${metrics[@]}"

# ---- routes: every path of the OpenAPI document ----
mapfile -t specs < <(find . \( -name 'build*' -o -name .deps -o -name .git \) -prune -o -name openapi.yaml -type f -print)
if [ ${#specs[@]} -eq 1 ]; then
  mapfile -t paths < <(awk '/^paths:/ {in_paths = 1; next}
                            in_paths && /^[^ #]/ {in_paths = 0}
                            in_paths && /^  \/[^ ]*:[[:space:]]*$/ {p = $1; sub(/:$/, "", p); print p}' "${specs[0]}")
  if [ ${#paths[@]} -ge 5 ]; then ok "${specs[0]} has ${#paths[@]} paths"
  else bad "${specs[0]} has ${#paths[@]} paths (expected at least 5): has its layout changed?"; fi
  [ ${#paths[@]} -gt 0 ] && check "$DOCS/http-api.md" "OpenAPI paths" "${paths[@]}"
else
  bad "expected one openapi.yaml in the repository, found ${#specs[@]}: ${specs[*]}"
fi

# ---- HTTP error codes: every literal code given with a literal status ----
mapfile -t efiles < <(src_grep -E '(srv_error_set|head_error|form_fail|shape_fault|fail)\(')
codes=()
if [ ${#efiles[@]} -gt 0 ]; then
  mapfile -t codes < <(cat "${efiles[@]}" | tr '\n' ' ' |
    grep -oE '(srv_error_set|head_error|form_fail|shape_fault|[^a-z_]fail)\([^,;()]*,[[:space:]]*[1-5][0-9][0-9],[[:space:]]*"[a-z_]+"' |
    sed -E 's/.*"([a-z_]+)"$/\1/' | sort -u)
fi
if [ ${#codes[@]} -ge 20 ]; then ok "found ${#codes[@]} HTTP error codes in the sources"
else bad "found ${#codes[@]} HTTP error codes in the sources (expected at least 20): have the error helpers changed?"; fi
[ ${#codes[@]} -gt 0 ] && check "$DOCS/http-api.md" "HTTP error codes" "${codes[@]}"

echo "it_docs: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
