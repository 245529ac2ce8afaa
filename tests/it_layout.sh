#!/usr/bin/env bash
# it_layout.sh: the source layout shows the architecture: every include names its folder, folders include only the layers below them, and no folder holds more than 40% of the C outside tests.
set -euo pipefail
cd "$(dirname "$0")/.."
fails=0
passes=0
ok() { echo "ok   $*"; passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# The layers, lowest first: a folder may include its own headers and those of the layers before it.
layers=(common imaging model retrieval core server cli)
rank() { local i; for i in "${!layers[@]}"; do [ "${layers[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }

srcs=$(git ls-files '*.c' '*.h' '*.cu' 2>/dev/null | grep -v -e '^tests/' -e '^scripts/' -e '^training/' || true)
[ -n "$srcs" ] || { echo "it_layout: SKIP (not a git checkout)"; exit 0; }

# 1. every project include names its folder ("model/nn.h"), and the file exists from the root
unnamed=$(grep -n '#include "' $srcs tests/*.c tests/*.h scripts/*.c | grep -v '#include "gen/' |
  sed -n 's/^\([^:]*\):\([0-9]*\):#include "\([^"]*\)".*/\1:\2 \3/p' | while read -r where inc; do
    [ -f "$inc" ] || echo "$where $inc"; done)
[ -z "$unnamed" ] && ok "every include names its folder from the repository root" ||
  bad "includes that do not name a file from the root: $(echo "$unnamed" | head -5 | tr '\n' ';')"

# 2. folders include only their own layer and the ones below (so no cycles between folders)
up=""
for f in $srcs; do
  from=${f%%/*}
  rf=$(rank "$from")
  [ "$rf" -ge 0 ] || { up="$up $f(folder $from has no layer)"; continue; }
  for inc in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f" | grep -v '^gen/'); do
    to=${inc%%/*}
    rt=$(rank "$to")
    if [ "$rt" -lt 0 ] || [ "$rt" -gt "$rf" ] || { [ "$from" = server ] && [ "$to" = cli ]; } ||
       { [ "$from" = cli ] && [ "$to" = server ]; }; then
      up="$up $f->$inc"
    fi
  done
done
[ -z "$up" ] && ok "includes go down the layers ${layers[*]} (server and cli are side by side)" ||
  bad "includes against the layers:$up"

# 3. no folder holds more than 40% of the C outside tests
total=$(cat $srcs | wc -l)
worst=""
for d in "${layers[@]}"; do
  n=$(cat $(echo "$srcs" | tr ' ' '\n' | grep "^$d/") /dev/null | wc -l)
  pct=$((100 * n / total))
  printf '     %-10s %6d lines  %3d%%\n' "$d" "$n" "$pct"
  [ "$pct" -le 40 ] || worst="$worst $d=$pct%"
done
[ -z "$worst" ] && ok "no folder holds more than 40% of the $total lines of C outside tests" || bad "folders over 40%:$worst"

echo "it_layout: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
