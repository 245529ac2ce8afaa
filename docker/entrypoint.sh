#!/bin/sh
# entrypoint.sh: the container's entry point: starts semipaintd with the given arguments (default: -c /etc/semipaint/semipaintd.yaml), serving Sim-0 for each model family whose configured database does not exist yet.
#
# semipaintd refuses to start when a family's database (retrieval.database for the first family,
# model.family's; families.NAME.database for the others) names a database it cannot open. In a
# container the databases live on a volume that starts empty, so for each family whose database path
# is missing or an empty directory (and whose variable, SEMIPAINT_RETRIEVAL_DATABASE or
# SEMIPAINT_FAMILIES_<NAME>_DATABASE, does not set it explicitly), this script says so and sets that
# variable empty: the family runs Sim-0 (its refine_fallback). Build the database at the family's
# working size with
#   semipaint index build --images DIR --out /data/db [--size 128]
# (docker/jobs/) and restart. A path that exists but is not a valid database still stops the daemon.
set -eu
[ "$#" -gt 0 ] || set -- -c /etc/semipaint/semipaintd.yaml
case "$1" in -*) ;; *) exec "$@" ;; esac # a command instead of options: run it (e.g. semipaint index build)
tab=$(printf '\t')
# One line per family: VARIABLE<TAB>DATABASE<TAB>FAMILY<TAB>COARSE, from the effective configuration
# (an invalid one prints nothing here; semipaintd then says what is wrong).
families=$(semipaintd "$@" --print-config 2>/dev/null | awk -v OFS="$tab" '
  function val(s) { sub(/^[^:]*: "?/, "", s); sub(/"$/, "", s); return s }
  /^[a-z_]+:/ { sec = $1; sub(/:.*/, "", sec); fam = ""; next }
  sec == "model" && /^  family: / { first = val($0) }
  sec == "model" && /^  coarse: / { fcoarse = val($0) }
  sec == "retrieval" && /^  database: / { fdb = val($0) }
  sec == "families" && /^  [a-z0-9]+:$/ { fam = $1; sub(/:$/, "", fam) }
  sec == "families" && fam != "" && /^    coarse: / { coarse[fam] = val($0) }
  sec == "families" && fam != "" && /^    database: / { db[fam] = val($0); order[++n] = fam }
  END {
    if (first != "") print "SEMIPAINT_RETRIEVAL_DATABASE", fdb, first, fcoarse
    for (i = 1; i <= n; i++) print "SEMIPAINT_FAMILIES_" toupper(order[i]) "_DATABASE", db[order[i]], order[i], coarse[order[i]]
  }')
while IFS="$tab" read -r var db fam coarse; do
  if [ -z "$var" ] || [ -z "$db" ]; then continue; fi
  eval "explicit=\${$var+set}"
  [ -z "$explicit" ] || continue # set in the environment: used as given
  if [ ! -e "$db" ] || [ -z "$(ls -A "$db" 2>/dev/null)" ]; then
    size=$(semipaint weights info "$coarse" 2>/dev/null | sed -n 's/^size *\([0-9][0-9]*\)$/\1/p' || true)
    printf '{"level":"warn","msg":"entrypoint: no database at %s yet: serving Sim-0 for family %s (build one with: semipaint index build --images DIR --out %s%s)"}\n' \
      "$db" "$fam" "$db" "${size:+ --size $size}" >&2
    eval "export $var="
  fi
done <<LIST
$families
LIST
exec semipaintd "$@"
