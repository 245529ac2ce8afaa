#!/usr/bin/env bash
# it_openapi.sh: server/openapi.yaml against the route table and Redocly's lint: every route of server/srv_routes.c
# is in the document with its method and its auth as `security` (public: [], bearer: [{bearer: []}], the images
# route: [{}, {bearer: []}]), the document has no other operation, and `redocly lint --extends recommended` reports
# no error (warnings are printed, not failed).
# The lint skips with a message when node or the pinned @redocly/cli (tests/npm, installed by scripts/npm_deps.sh)
# is absent; the route check skips when python3 has no yaml module. No daemon is started: tests/it_server.sh
# checks that GET /openapi.yaml serves this file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}
SPEC=${SPEC:-server/openapi.yaml}
ROUTES=${ROUTES:-server/srv_routes.c}
passes=0
fails=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
skip() { echo "skip $*"; }
tmp=$(mktemp -d /tmp/it_openapi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---- the route table against the document ----
if "$PY" -c 'import yaml' 2>/dev/null; then
  if "$PY" - "$ROUTES" "$SPEC" <<'EOF'; then ok "every route of $ROUTES is in $SPEC with its method and security, and nothing else"
import re, sys, yaml
routes_c, spec_path = sys.argv[1], sys.argv[2]
src = open(routes_c).read()
src = re.sub(r'/\*.*?\*/', ' ', src, flags=re.S)  # comments out, whatever the layout
table = re.search(r'srv_route\s+routes\s*\[\s*\]\s*=\s*\{(.*?)\n\s*\}\s*;', src, re.S)
if not table:
    sys.exit(f"{routes_c}: the routes[] table was not found")
# one entry: {"METHOD", "path", prefix, "label", start, resumed, SRV_AUTH_..., ...}
entry = re.compile(r'\{\s*"([A-Z]+)"\s*,\s*"([^"]*)"\s*,\s*([01])\s*,\s*"[^"]*"\s*,\s*\w+\s*,\s*\w+\s*,\s*(SRV_AUTH_\w+)')
rows = entry.findall(table.group(1))
n_entries = table.group(1).count('{"')
if len(rows) < 5 or len(rows) != n_entries:
    sys.exit(f"{routes_c}: read {len(rows)} routes of {n_entries} entries: has the table's layout changed?")
spec = yaml.safe_load(open(spec_path))
paths = spec.get('paths') or {}
want_security = {
    'SRV_AUTH_NONE': [],
    'SRV_AUTH_BEARER': [{'bearer': []}],
    'SRV_AUTH_BEARER_IMAGES': [{}, {'bearer': []}],  # the token only with server.images_require_token
}
errors, seen = [], set()
for method, path, prefix, auth in rows:
    m = method.lower()
    if prefix == '1':  # the path is a prefix and the rest of the URL one parameter: /v1/images/ -> /v1/images/{id}
        cands = [p for p in paths if re.fullmatch(re.escape(path) + r'\{[A-Za-z_][A-Za-z0-9_]*\}', p)]
    else:
        cands = [p for p in paths if p == path]
    if len(cands) != 1:
        errors.append(f"{method} {path}{'{...}' if prefix == '1' else ''}: {len(cands)} matching paths in the document")
        continue
    op = (paths[cands[0]] or {}).get(m)
    if op is None:
        errors.append(f"{method} {cands[0]}: the path has no {m} operation")
        continue
    seen.add((cands[0], m))
    if auth not in want_security:
        errors.append(f"{method} {path}: unknown auth {auth} (teach this test its security)")
    elif op.get('security') != want_security[auth]:
        errors.append(f"{method} {cands[0]}: security is {op.get('security')!r}, {auth} wants {want_security[auth]!r}")
ops = {'get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'}
for p, item in paths.items():
    for m in (item or {}):
        if m in ops and (p, m) not in seen:
            errors.append(f"{m.upper()} {p}: in the document but not in the route table")
for e in errors:
    print("   ", e)
print(f"    {len(rows)} routes in the table, {len(seen)} operations matched")
sys.exit(1 if errors else 0)
EOF
  else bad "$SPEC and $ROUTES disagree (above)"; fi
else
  skip "the route check ($PY has no yaml module: apt-get install python3-yaml)"
fi

# ---- Redocly's recommended lint ----
if ! command -v node >/dev/null; then
  skip "redocly lint (node is not installed)"
elif ! bash scripts/npm_deps.sh; then
  skip "redocly lint (@redocly/cli could not be installed into .deps/npm)"
elif [ ! -x .deps/npm/node_modules/.bin/redocly ]; then
  skip "redocly lint (.deps/npm/node_modules/.bin/redocly is missing)"
else
  # no telemetry and no update check: the test makes no network call
  export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
  lint() { .deps/npm/node_modules/.bin/redocly lint --extends recommended --format stylish "$@" 2>&1 |
           grep -vF -e '╔' -e '╚' -e '║' || true; } # the box of Node's deprecation notice out
  # the lint must be able to fail: an operation without security or 4xx response is an error
  printf '%s\n' 'openapi: 3.0.3' 'info: {title: t, version: "1", license: {name: MIT, url: "https://opensource.org/license/mit"}}' \
    'servers: [{url: /}]' 'paths:' '  /x:' '    get:' '      operationId: x' '      summary: x' \
    "      responses: {'200': {description: ok}}" > "$tmp/bad.yaml"
  if lint "$tmp/bad.yaml" | grep -q 'error.*security-defined'; then ok "redocly lint reports a missing security as an error"
  else bad "redocly lint did not report security-defined on an operation without security:"; lint "$tmp/bad.yaml"; fi
  set +e
  .deps/npm/node_modules/.bin/redocly lint --extends recommended --format stylish "$SPEC" > "$tmp/lint" 2>&1
  rc=$?
  set -e
  grep -vF -e '╔' -e '╚' -e '║' "$tmp/lint" | sed '/^[[:space:]]*$/d; s/^/    /'
  nerr=$(grep -cE '^[[:space:]]+[0-9]+:[0-9]+[[:space:]]+error' "$tmp/lint" || true)
  nwarn=$(grep -cE '^[[:space:]]+[0-9]+:[0-9]+[[:space:]]+warning' "$tmp/lint" || true)
  if [ "$rc" -eq 0 ] && [ "$nerr" -eq 0 ] && grep -q 'validated' "$tmp/lint"; then
    ok "redocly lint --extends recommended $SPEC: 0 errors, $nwarn warnings"
  else
    bad "redocly lint --extends recommended $SPEC: exit $rc, $nerr errors, $nwarn warnings"
  fi
fi

echo "it_openapi: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
