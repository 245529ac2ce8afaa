#!/usr/bin/env bash
# bench_retrieval.sh: retrieval benchmarks: build and exact search of the 12,000-image database, and the 1M synthetic-vector index benchmark.
#
# usage: scripts/bench_retrieval.sh [db|synthetic|all]
#   db         builds the CelebA-HQ train database (DESC, default thumb16) unless DB names one,
#              then times exact search at batch 1 and 8 (index bench)
#   synthetic  N (1000000) clustered DIM-d (512) unit vectors: Flat (exact) and FACTORY
#              (IVF1024,Flat) build time, memory, latency at batch 1 and 8, recall@1 and @10,
#              over the NPROBE sweep (1,4,16,64)
# Environment: BUILD (build), SEMIPAINT_DATA (../shared/data), DB, DESC, N, DIM, FACTORY, NPROBE, NQ.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
bin=$BUILD/semipaint
DATA=${SEMIPAINT_DATA:-../shared/data}
what=${1:-all}
[ -x "$bin" ] || { echo "bench_retrieval: build $bin first (make)" >&2; exit 1; }
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ "$what" = db ] || [ "$what" = all ]; then
  desc=${DESC:-thumb16}
  db=${DB:-}
  if [ -z "$db" ]; then
    train=$DATA/celebahq256/train
    if [ ! -d "$train" ]; then
      echo "bench_retrieval: SKIP the database benchmark ($train absent; set DB=...)"
    else
      db=${TMPDIR:-/tmp}/semipaint-bench-db-$desc
      if [ ! -f "$db/manifest.json" ]; then
        echo "== build: $train -> $db ($desc)"
        "$bin" index build --images "$train" --out "$db" --descriptor "$desc" --force
      fi
    fi
  fi
  if [ -n "$db" ]; then
    echo "== exact search: $db"
    "$bin" index info "$db"
    "$bin" index bench "$db" --nq "${NQ:-1000}" -k 5
  fi
fi

if [ "$what" = synthetic ] || [ "$what" = all ]; then
  echo "== synthetic vectors"
  "$bin" index bench-synthetic --n "${N:-1000000}" --dim "${DIM:-512}" --factory "${FACTORY:-IVF1024,Flat}" \
    --nprobe "${NPROBE:-1,4,16,64}" --nq "${NQ:-1000}"
fi
