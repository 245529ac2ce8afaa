#!/bin/sh
# entrypoint.sh: the container's entry point: starts semipaintd with the given arguments (default: -c /etc/semipaint/semipaintd.yaml), serving Sim-0 while the configured database does not exist yet.
#
# semipaintd refuses to start when retrieval.database names a database it cannot open. In a
# container the database lives on a volume that starts empty, so when the configured path is
# missing or an empty directory (and SEMIPAINT_RETRIEVAL_DATABASE does not set it explicitly),
# this script says so and starts without a database (Sim-0); build one with
#   semipaint index build --images DIR --out /data/db
# and restart. A path that exists but is not a valid database still stops the daemon.
set -eu
[ "$#" -gt 0 ] || set -- -c /etc/semipaint/semipaintd.yaml
case "$1" in -*) ;; *) exec "$@" ;; esac # a command instead of options: run it (e.g. semipaint index build)
if [ -z "${SEMIPAINT_RETRIEVAL_DATABASE+set}" ]; then
  db=$(semipaintd "$@" --print-config 2>/dev/null | sed -n 's/^  database: "\(.*\)"$/\1/p')
  if [ -n "$db" ] && { [ ! -e "$db" ] || [ -z "$(ls -A "$db" 2>/dev/null)" ]; }; then
    printf '{"level":"warn","msg":"entrypoint: no database at %s yet: serving Sim-0 (build one with: semipaint index build --images DIR --out %s)"}\n' \
      "$db" "$db" >&2
    export SEMIPAINT_RETRIEVAL_DATABASE=
  fi
fi
exec semipaintd "$@"
