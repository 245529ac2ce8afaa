#!/usr/bin/env bash
# it_cli_flags.sh: every `semipaint` command takes only its own options: one it does not take, a bad value or a stray argument is a usage error (exit 2) naming the command and the option, with the command's usage; --help, --name=value and the environment's SEMIPAINT_CONV still work.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SP=$BUILD/semipaint
[ -x "$SP" ] || { echo "SKIP: $SP not built"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }

# usage_error "WHAT THE MESSAGE NAMES" "USAGE LINE" ARGS...: exit 2, the message and the usage on stderr, nothing on stdout
usage_error() {
  local says=$1 usage=$2
  shift 2
  "$SP" "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$?
  if [ $rc -ne 2 ]; then bad "semipaint $*: exit $rc, not 2"; head -3 "$tmp/err"; return; fi
  grep -qF -- "$says" "$tmp/err" || { bad "semipaint $*: stderr does not say '$says':"; head -3 "$tmp/err"; return; }
  [ -z "$usage" ] || grep -qF -- "$usage" "$tmp/err" || { bad "semipaint $*: no '$usage' on stderr"; return; }
  [ ! -s "$tmp/out" ] || { bad "semipaint $*: wrote to stdout"; return; }
  ok
}

echo "== an option another subcommand takes, or none does"
usage_error "semipaint index info: --factory is not an option" "usage: semipaint index info DB" index info DB --factory HNSW32
usage_error "semipaint index query: --force is not an option" "usage: semipaint index query" index query DB x.png --force
usage_error "semipaint index query: --lock-wait is not an option" "usage: semipaint index query" index query DB x.png --lock-wait 3
usage_error "semipaint index build: -k is not an option" "usage: semipaint index build" index build --images a --out b -k 5
usage_error "semipaint index build: --nq is not an option" "usage: semipaint index build" index build --images a --out b --nq 5
usage_error "semipaint index build: --db is not an option" "usage: semipaint index build" index build --images a --db b
usage_error "semipaint index query: --size is not an option" "usage: semipaint index query" index query DB x.png --size 128
usage_error "semipaint index add: --size is not an option" "usage: semipaint index add" index add DB x.png --size 128
usage_error "semipaint index add: --nprobe is not an option" "usage: semipaint index add" index add DB x.png --nprobe 4
usage_error "semipaint index add: --factory is not an option" "usage: semipaint index add" index add DB x.png --factory Flat
usage_error "semipaint index bench: --lock-wait is not an option" "usage: semipaint index bench" index bench DB --lock-wait 1
usage_error "semipaint index bench: --force is not an option" "usage: semipaint index bench" index bench DB --force
usage_error "semipaint index bench-synthetic: --weights is not an option" "usage: semipaint index bench-synthetic" \
  index bench-synthetic --weights v.safetensors
usage_error "semipaint index bench-synthetic: -k is not an option" "usage: semipaint index bench-synthetic" index bench-synthetic -k 3
usage_error "semipaint index eval-descriptors: --out is not an option" "usage: semipaint index eval-descriptors" \
  index eval-descriptors --out DB --queries q --masks m
usage_error "semipaint index eval-descriptors: --factory is not an option" "usage: semipaint index eval-descriptors" \
  index eval-descriptors --db DB --queries q --masks m --factory Flat
usage_error "semipaint eval: --force is not an option" "usage: semipaint eval" eval --images a --masks b --out c --force
usage_error "semipaint eval: --device is not an option" "usage: semipaint eval" eval --images a --masks b --out c --device cpu
usage_error "semipaint bench: --images is not an option" "usage: semipaint bench" bench --images a
usage_error "semipaint bench: -t is not an option" "usage: semipaint bench" bench -t 2
usage_error "semipaint masks: --images is not an option" "usage: semipaint masks" masks --out d --images a
usage_error "semipaint masks: --threads is not an option" "usage: semipaint masks" masks --out d --threads 2
usage_error "semipaint weights: --device is not an option" "usage: semipaint weights" weights info w.safetensors --device cpu
usage_error "semipaint route: --out is not an option" "usage: semipaint route" route --image a --mask b --out c
usage_error "semipaint route: --threads is not an option" "usage: semipaint route" route --image a --mask b --threads 2

echo "== stray, missing and too many positional arguments"
usage_error "semipaint index bench-synthetic: unexpected argument 'foo'" "usage: semipaint index bench-synthetic" \
  index bench-synthetic foo
usage_error "semipaint index eval-descriptors: unexpected argument 'x'" "" index eval-descriptors x --db d --queries q --masks m
usage_error "semipaint index build: unexpected argument 'extra'" "usage: semipaint index build" index build --images a --out b extra
usage_error "semipaint index info: unexpected argument 'DB2'" "usage: semipaint index info DB" index info DB DB2
usage_error "semipaint index info: missing arguments" "usage: semipaint index info DB" index info
usage_error "semipaint index query: too few arguments" "usage: semipaint index query" index query DB
usage_error "semipaint index add: too few arguments" "usage: semipaint index add" index add DB
usage_error "semipaint bench: unexpected argument 'foo'" "usage: semipaint bench" bench foo
usage_error "semipaint eval: unexpected argument 'foo'" "usage: semipaint eval" eval foo --images a --masks b --out c
usage_error "semipaint masks: unexpected argument 'foo'" "usage: semipaint masks" masks --out d foo
usage_error "semipaint route: unexpected argument 'foo'" "usage: semipaint route" route foo --image a --mask b
usage_error "semipaint weights: unexpected argument 'y'" "usage: semipaint weights" weights info x y
usage_error "semipaint weights: unknown subcommand 'show'" "usage: semipaint weights" weights show x
usage_error "semipaint index: unknown subcommand 'drop'" "usage: semipaint index SUBCOMMAND" index drop DB

echo "== values: missing, out of range, not one of the names"
usage_error "semipaint index build: --batch 0: expected an integer in [1, 4096]" "" index build --images a --out b --batch 0
usage_error "semipaint index build: --device tpu: expected auto, cpu or cuda" "" index build --images a --out b --device tpu
usage_error "semipaint index build: --images needs a value" "usage: semipaint index build" index build --out b --images
usage_error "semipaint index query: -k 0: expected an integer in [1, 4096]" "" index query DB x.png -k 0
usage_error "semipaint index query: --nprobe lots: expected an integer" "" index query DB x.png --nprobe lots
usage_error "semipaint index build: --force takes no value" "" index build --images a --out b --force=yes
usage_error "semipaint index build: --size 8: expected an integer in [16, 1024]" "" index build --images a --out b --size 8
usage_error "semipaint index build: --size 2048: expected an integer in [16, 1024]" "" index build --images a --out b --size=2048
usage_error "semipaint index bench-synthetic: --spread -1: expected a number in [0, " "" index bench-synthetic --spread -1
usage_error "semipaint bench: --device tpu: expected cpu, cuda or auto" "" bench --device tpu
usage_error "semipaint bench: --batch 1,x: expected a comma-separated list" "" bench --batch 1,x
usage_error "semipaint bench: --threads 0: expected an integer in [1, 1024]" "" bench --threads 0
usage_error "semipaint bench: --iters 5x: expected an integer" "" bench --iters 5x
usage_error "semipaint bench: --precision fp8: expected fp32, tf32 or fp16" "" bench --precision fp8
usage_error "semipaint eval: --blend maybe: expected on or off" "" eval --images a --masks b --out c --blend maybe
usage_error "semipaint eval: --seed -1: expected an integer" "" eval --images a --masks b --out c --seed -1
usage_error "semipaint bench: --blend 1: expected on or off" "" bench --blend 1
usage_error "semipaint inpaint: --method fancy: expected sim, coarse or telea" "" inpaint --image a --mask b --out c.png --method fancy
usage_error "semipaint inpaint: --quality 0: expected an integer in [1, 100]" "" inpaint --image a --mask b --out c.png --quality=0
echo "== inpaint: a stray word does not eat the next argument; a last unknown flag is named as unknown"
usage_error "semipaint inpaint: unexpected argument 'extra'" "usage: semipaint inpaint" inpaint extra --image a --mask b --out c.png
usage_error "semipaint inpaint: --bogus is not an option" "usage: semipaint inpaint" inpaint --image a --mask b --out c.png --bogus
usage_error "semipaint inpaint: --out needs a value" "usage: semipaint inpaint" inpaint --image a --mask b --out
usage_error "semipaint masks: --count 0: expected an integer in [1, 100000000]" "" masks --out d --count 0
usage_error "semipaint masks: --size 4: expected an integer in [8, 8192]" "" masks --out d --size=4
usage_error "semipaint route: --size 8: expected an integer in [16, 4096]" "" route --image a --mask b --size 8

echo "== required options"
usage_error "semipaint index build: --images and --out are required" "usage: semipaint index build" index build --images a
usage_error "semipaint index eval-descriptors: --db, --queries and --masks are required" "" index eval-descriptors --db d
usage_error "semipaint eval: --images, --masks and --out are required" "usage: semipaint eval" eval --images a
usage_error "semipaint masks: --out DIR is required" "usage: semipaint masks" masks --count 3
usage_error "semipaint route: --image and --mask are required" "usage: semipaint route" route --image a

echo "== --help on stdout, exit 0, for every command and index subcommand"
for args in "index build" "index info" "index query" "index add" "index bench" "index bench-synthetic" \
  "index eval-descriptors" "index" "eval" "bench" "masks" "weights" "inpaint" "route"; do
  # shellcheck disable=SC2086
  "$SP" $args --help > "$tmp/out" 2> "$tmp/err"
  rc=$?
  [ $rc -eq 0 ] && grep -q "^usage: semipaint $args" "$tmp/out" && [ ! -s "$tmp/err" ] && ok ||
    bad "semipaint $args --help: exit $rc, stdout '$(head -c 80 "$tmp/out")'"
done

echo "== the options a command takes still work: --name=value, options after arguments"
if "$SP" index bench-synthetic --n=2000 --dim=8 --nq=20 --factory=Flat --clusters 4 --seed=3 > "$tmp/out" 2> "$tmp/err" &&
  grep -q "synthetic: 2000 vectors + 20 queries, dim 8, around 4 clusters" "$tmp/out"; then ok; else
  bad "index bench-synthetic with --name=value options"; head -5 "$tmp/err"
fi
mkdir -p "$tmp/img"
for f in $(ls ../shared/data/celebahq256/val 2>/dev/null | sort | head -3); do ln -s "$(cd ../shared/data/celebahq256/val && pwd)/$f" "$tmp/img/$f"; done
if [ -n "$(ls "$tmp/img")" ]; then
  first=$(ls "$tmp/img" | head -1)
  # (outputs to files, then grep: `grep -q` in a pipeline under pipefail can fail on SIGPIPE)
  "$SP" index build --images "$tmp/img" --out "$tmp/db" --threads=1 --batch 2 > /dev/null 2>&1 &&
    "$SP" index info "$tmp/db" > "$tmp/info" 2> /dev/null && grep -q "^images      3 " "$tmp/info" &&
    "$SP" index query "$tmp/db" "$tmp/img/$first" -k 2 --threads 1 > "$tmp/q2" 2> /dev/null && grep -q "^1 " "$tmp/q2" &&
    "$SP" index query --k=1 "$tmp/db" "$tmp/img/$first" > "$tmp/q1" 2> /dev/null && grep -q "^1 .*$first" "$tmp/q1" &&
    "$SP" index bench "$tmp/db" --nq 8 -k 2 --seed 2 > /dev/null 2>&1 &&
    ok || bad "index build, info, query (-k before and after the arguments), bench on 3 images"
else
  echo "(../shared/data/celebahq256/val absent: the database round trip skipped)"
fi

echo "== index build --size 128 (the general family's working size): the other subcommands use the database's size"
mkdir -p "$tmp/gen"
for f in $(ls ../shared/data/general/train 2>/dev/null | sort | head -4); do ln -s "$(cd ../shared/data/general/train && pwd)/$f" "$tmp/gen/$f"; done
masks=../shared/data/masks/nvidia-irregular-test
if [ -n "$(ls "$tmp/gen")" ]; then
  first=$(ls "$tmp/gen" | head -1)
  last=$(ls "$tmp/gen" | tail -1)
  if "$SP" index build --images "$tmp/gen" --out "$tmp/db128" --size 128 --limit 3 --threads 1 > "$tmp/b128" 2>&1 &&
    grep -q "at 128x128" "$tmp/b128" && "$SP" index info "$tmp/db128" > "$tmp/info" 2> /dev/null &&
    grep -q "^images      3 (128x128 RGB" "$tmp/info" && [ "$(wc -c < "$tmp/db128/images.u8")" -eq $((4096 + 3 * 128 * 128 * 3)) ]; then
    ok; else bad "index build --size 128: $(cat "$tmp/b128" "$tmp/info" 2>/dev/null | tail -3)"; fi
  "$SP" index query "$tmp/db128" "$tmp/gen/$first" -k 2 > "$tmp/q" 2> "$tmp/err" && grep -q "^1 .*0 .*1.0000.* $first" "$tmp/q" &&
    ok || bad "index query against the 128 database: $(cat "$tmp/q" "$tmp/err")"
  "$SP" index add "$tmp/db128" "$tmp/gen/$last" > "$tmp/add" 2> "$tmp/err" && grep -q "^3 $last" "$tmp/add" &&
    "$SP" index info "$tmp/db128" > "$tmp/info" 2> /dev/null && grep -q "^images      4 (128x128 RGB" "$tmp/info" &&
    "$SP" index query "$tmp/db128" "$tmp/gen/$last" -k 1 > "$tmp/q" 2> /dev/null && grep -q "^1 .*3 .* $last" "$tmp/q" &&
    "$SP" index bench "$tmp/db128" --nq 4 -k 2 > /dev/null 2>&1 &&
    ok || bad "index add, query, bench at 128: $(cat "$tmp/add" "$tmp/err" "$tmp/q" 2>/dev/null | tail -3)"
  if [ -d "$masks" ]; then
    "$SP" index eval-descriptors --db "$tmp/db128" --queries "$tmp/gen" --masks "$masks" --limit 2 \
      --descriptors thumb16 --fill pushpull --threads 1 > "$tmp/ev" 2> "$tmp/err" && grep -q "^| thumb16 | 768 |" "$tmp/ev" &&
      ok || bad "index eval-descriptors at 128: $(tail -3 "$tmp/err")"
  fi
else
  echo "(../shared/data/general/train absent: the --size 128 round trip skipped)"
fi

echo "== the environment's SEMIPAINT_CONV reaches the backend through the CLI (nn_backend_opts_from_env)"
w=tests/fixtures/small/pconv_unet.safetensors
SEMIPAINT_CONV=fast "$SP" weights info "$w" > /dev/null 2> "$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "SEMIPAINT_CONV=fast" "$tmp/err" && ok || bad "SEMIPAINT_CONV=fast: exit $rc, $(head -c 200 "$tmp/err")"
SEMIPAINT_CONV=direct "$SP" weights info "$w" > /dev/null 2>&1 && ok || bad "SEMIPAINT_CONV=direct refused"

echo "== --version: the one SP_VERSION of common/sp.h"
want=$(sed -n 's/^#define SP_VERSION "\(.*\)"$/\1/p' common/sp.h)
[ -n "$want" ] && [ "$("$SP" --version)" = "semipaint $want" ] && ok || bad "--version says '$("$SP" --version)', sp.h '$want'"

echo "it_cli_flags: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
