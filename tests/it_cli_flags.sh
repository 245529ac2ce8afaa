#!/usr/bin/env bash
# it_cli_flags.sh: every `semipaint` command takes only its own options: one it does not take, a bad value or a stray argument is a usage error (exit 2) naming the command and the option, with the command's usage; --help, --name=value and the environment's SEMIPAINT_CONV still work; bench and index --model NAME [-c FILE] take a model family's nets and database from the configuration, and an unknown family or a conflicting flag is a usage error.
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

echo "== --model NAME [-c FILE]: a model family of the configuration gives bench its nets and index its database"
# A configuration of two families of the small test nets (64 px): faces (model.*, no database, Sim-1 and
# Sim-0) and tiny (Sim-2 with a vgg16_features descriptor whose weights the family names, a database).
F=tests/fixtures/small
cat > "$tmp/fam.yaml" <<YAML
model:
  family: faces
  coarse: $F/pconv_unet.safetensors
  refine: $F/simk_unet_k1.safetensors
  refine_fallback: $F/simk_unet_k0.safetensors
  router: ""
retrieval:
  database: ""
families:
  tiny:
    coarse: $F/pconv_unet.safetensors
    refine: $F/simk_unet_k2.safetensors
    refine_fallback: $F/simk_unet_k0.safetensors
    database: $tmp/dbt
    descriptor: vgg16_features:avg
    descriptor_weights: $F/vgg16_features.safetensors
YAML
C=(-c "$tmp/fam.yaml")
# fails1 "WHAT STDERR SAYS" ARGS...: exit 1 (the work failed, not the usage) and the message on stderr
fails1() {
  local says=$1
  shift
  "$SP" "$@" > "$tmp/out" 2> "$tmp/err"
  local rc=$?
  [ $rc -eq 1 ] && grep -qF -- "$says" "$tmp/err" && ok || { bad "semipaint $*: exit $rc, not 1 saying '$says':"; head -3 "$tmp/err"; }
}
rows() { awk '$2 == 1 {print $1}' "$1" | tr '\n' ' '; } # the timing table's rows at batch 1
# bench: without --model the fixture nets as before (the four rows, in this order); with it the family's files
B=(--batch 1 --iters 1 --warmup 0 --threads 1)
"$SP" bench --weights-dir "$F" "${B[@]}" > "$tmp/b0" 2> "$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "^semipaint bench: .*, weights $F, 64x64$" "$tmp/b0" && [ "$(rows "$tmp/b0")" = "pconv vgg simk1 pipeline " ] &&
  ok || bad "bench --weights-dir (no --model): exit $rc, rows '$(rows "$tmp/b0")' $(head -3 "$tmp/err")"
"$SP" bench --model tiny "${C[@]}" "${B[@]}" > "$tmp/b1" 2> "$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "^semipaint bench: .*, model family tiny of $tmp/fam.yaml, 64x64" "$tmp/b1" &&
  grep -q "^  coarse  *$F/pconv_unet.safetensors (families.tiny.coarse)$" "$tmp/b1" &&
  grep -q "^  refine  *$F/simk_unet_k2.safetensors (families.tiny.refine), k = 2$" "$tmp/b1" &&
  grep -q "^  refine_fallback  *$F/simk_unet_k0.safetensors (families.tiny.refine_fallback)$" "$tmp/b1" &&
  grep -q "^  descriptor  *vgg16_features:avg (families.tiny.descriptor), weights $F/vgg16_features.safetensors$" "$tmp/b1" &&
  [ "$(rows "$tmp/b1")" = "pconv vgg simk2 simk0 pipeline pipeline0 " ] && ok ||
  bad "bench --model tiny: exit $rc, rows '$(rows "$tmp/b1")' $(head -5 "$tmp/b1") $(head -3 "$tmp/err")"
"$SP" bench --model faces "${C[@]}" "${B[@]}" --blend off > "$tmp/b2" 2> "$tmp/err"
rc=$?
[ $rc -eq 0 ] && grep -q "model family faces of $tmp/fam.yaml, 64x64" "$tmp/b2" &&
  grep -q "^  coarse  *$F/pconv_unet.safetensors (model.coarse)$" "$tmp/b2" &&
  grep -q "^  descriptor  *thumb16 (retrieval.descriptor auto, and retrieval.database is empty" "$tmp/b2" &&
  grep -q "^telea blend: off (--blend off)" "$tmp/b2" &&
  [ "$(rows "$tmp/b2")" = "pconv thumb16 simk1 simk0 pipeline pipeline0 " ] && ok ||
  bad "bench --model faces (the first family): exit $rc, rows '$(rows "$tmp/b2")' $(head -5 "$tmp/b2") $(head -3 "$tmp/err")"
usage_error "semipaint bench: --model nope: $tmp/fam.yaml has no such family; it has: faces tiny" "" bench --model nope "${C[@]}"
usage_error "semipaint bench: --weights-dir and --model are exclusive" "" bench --model tiny --weights-dir "$F"
usage_error "semipaint bench: --vs-torch compares the --weights-dir files; it does not take --model" "" bench --model tiny --vs-torch
usage_error "semipaint bench: -c/--config is read only with --model" "" bench "${C[@]}"
fails1 "semipaint bench: --model tiny: $tmp/nonexistent.yaml" bench --model tiny -c "$tmp/nonexistent.yaml"
SEMIPAINT_FAMILIES_TINY_REFINE=$tmp/none.safetensors fails1 "families.tiny.refine: $tmp/none.safetensors" \
  bench --model tiny "${C[@]}" "${B[@]}"

# index: the family's database (built at its nets' 64 px with its VGG descriptor and weights) for every subcommand
mkdir -p "$tmp/fimg" "$tmp/fmask"
if "${PY:-/usr/bin/python3}" - "$tmp" <<'PYEOF' 2> /dev/null
import sys
from PIL import Image, ImageDraw
d = sys.argv[1]
for i in range(4):
    im = Image.new("RGB", (80 + 8 * i, 72), (40 * i, 200 - 30 * i, 90))
    ImageDraw.Draw(im).ellipse([10 + 5 * i, 8, 50, 40 + 6 * i], fill=(250, 20 * i, 60))
    im.save(f"{d}/fimg/f{i}.png")
m = Image.new("L", (64, 64), 0)
ImageDraw.Draw(m).rectangle([20, 20, 40, 44], fill=255)
m.save(f"{d}/fmask/m.png")
PYEOF
then
  "$SP" index build --model tiny "${C[@]}" --images "$tmp/fimg" --limit 3 --threads 1 > "$tmp/out" 2> "$tmp/err"
  rc=$?
  [ $rc -eq 0 ] && grep -q "^built $tmp/dbt: 3 images (0 skipped) at 64x64, descriptor vgg16_features:avg" "$tmp/out" &&
    grep -q "model family tiny: 64x64 (families.tiny.coarse's working size), descriptor vgg16_features:avg (families.tiny.descriptor)" "$tmp/err" &&
    ok || bad "index build --model tiny: exit $rc, $(cat "$tmp/out" "$tmp/err" | tail -4)"
  "$SP" index info --model tiny "${C[@]}" > "$tmp/out" 2> "$tmp/err" && grep -q "^database    $tmp/dbt$" "$tmp/out" &&
    grep -q "^images      3 (64x64 RGB" "$tmp/out" && grep -q "^descriptor  vgg16_features:avg" "$tmp/out" &&
    grep -q "model family tiny of $tmp/fam.yaml: database $tmp/dbt (families.tiny.database)" "$tmp/err" &&
    ok || bad "index info --model tiny: $(cat "$tmp/out" "$tmp/err" | tail -3)"
  "$SP" index query --model tiny "${C[@]}" "$tmp/fimg/f1.png" -k 2 > "$tmp/out" 2> "$tmp/err" &&
    grep -q "^1 *1 *1.0000.* f1.png" "$tmp/out" && ok || bad "index query --model tiny IMAGE: $(cat "$tmp/out" "$tmp/err" | tail -3)"
  "$SP" index add "${C[@]}" "$tmp/fimg/f3.png" --model tiny > "$tmp/out" 2> "$tmp/err" && grep -q "^3 f3.png" "$tmp/out" &&
    "$SP" index info --model=tiny "${C[@]}" > "$tmp/out" 2> /dev/null && grep -q "^images      4 (64x64 RGB" "$tmp/out" &&
    ok || bad "index add --model tiny IMAGE: $(cat "$tmp/out" "$tmp/err" | tail -3)"
  "$SP" index bench --model tiny "${C[@]}" --nq 4 -k 2 > "$tmp/out" 2> "$tmp/err" &&
    grep -q "^$tmp/dbt: 4 images, vgg16_features:avg" "$tmp/out" && ok || bad "index bench --model tiny: $(cat "$tmp/out" "$tmp/err" | tail -3)"
  "$SP" index eval-descriptors --model tiny "${C[@]}" --queries "$tmp/fimg" --masks "$tmp/fmask" --descriptors thumb16 \
    --fill pushpull --limit 2 > "$tmp/out" 2> "$tmp/err" && grep -q "^database $tmp/dbt: 4 images" "$tmp/out" &&
    grep -q "^| thumb16 |" "$tmp/out" && ok || bad "index eval-descriptors --model tiny: $(cat "$tmp/out" "$tmp/err" | tail -3)"
  usage_error "semipaint index build: --size 128, but --model tiny's nets work at 64 (families.tiny.coarse" "usage: semipaint index build" \
    index build --model tiny "${C[@]}" --images "$tmp/fimg" --size 128 --force
  usage_error "semipaint index build: --descriptor thumb16 differs from --model tiny's families.tiny.descriptor vgg16_features:avg" "" \
    index build --model tiny "${C[@]}" --images "$tmp/fimg" --descriptor thumb16 --force
  fails1 "semipaint index build: $tmp/dbt already exists" index build --model tiny "${C[@]}" --images "$tmp/fimg" --size 64
  usage_error "semipaint index add: DB $tmp/dbt and --model are exclusive: --model tiny names the database $tmp/dbt (families.tiny.database)" \
    "usage: semipaint index add" index add --model tiny "${C[@]}" "$tmp/dbt" "$tmp/fimg/f0.png"
  SEMIPAINT_FAMILIES_TINY_DESCRIPTOR=thumb32 fails1 "the database uses descriptor 'vgg16_features:avg', not 'thumb32'" \
    index query --model tiny "${C[@]}" "$tmp/fimg/f0.png"
else
  echo "(no Python with PIL: the --model database round trip skipped)"
fi
usage_error "semipaint index info: --model nope: $tmp/fam.yaml has no such family; it has: faces tiny" "" index info --model nope "${C[@]}"
usage_error "semipaint index build: --model nope: $tmp/fam.yaml has no such family; it has: faces tiny" "" \
  index build --model nope "${C[@]}" --images "$tmp/fimg"
usage_error "semipaint index info: DB $tmp/x and --model are exclusive" "usage: semipaint index info" index info "$tmp/x" --model tiny "${C[@]}"
usage_error "semipaint index query: DB $tmp/x and --model are exclusive" "usage: semipaint index query" \
  index query --model tiny "${C[@]}" "$tmp/x" "$tmp/fimg/f0.png"
usage_error "semipaint index bench: DB $tmp/x and --model are exclusive" "usage: semipaint index bench" index bench "$tmp/x" --model tiny "${C[@]}"
usage_error "semipaint index build: --out $tmp/x and --model are exclusive" "usage: semipaint index build" \
  index build --model tiny "${C[@]}" --images "$tmp/fimg" --out "$tmp/x"
usage_error "semipaint index eval-descriptors: --db $tmp/x and --model are exclusive" "" \
  index eval-descriptors --model tiny "${C[@]}" --db "$tmp/x" --queries q --masks m
usage_error "semipaint index build: --images is required" "usage: semipaint index build" index build --model tiny "${C[@]}"
usage_error "semipaint index query: --weights $tmp/v.safetensors differs from --model tiny's families.tiny.descriptor_weights" "" \
  index query --model tiny "${C[@]}" --weights "$tmp/v.safetensors" "$tmp/fimg/f0.png"
usage_error "semipaint index info: -c/--config is read only with --model" "usage: semipaint index info" index info "$tmp/x" "${C[@]}"
usage_error "semipaint index info: missing arguments" "usage: semipaint index info" index info
usage_error "semipaint index query: too few arguments" "usage: semipaint index query" index query "$tmp/fimg/f0.png"
usage_error "semipaint index bench-synthetic: --model is not an option" "" index bench-synthetic --model tiny
fails1 "semipaint index info: --model faces: retrieval.database is empty in $tmp/fam.yaml: the family has no database" \
  index info --model faces "${C[@]}"
for args in "bench" "index build" "index info" "index query" "index add" "index bench" "index eval-descriptors"; do
  # shellcheck disable=SC2086
  "$SP" $args --help > "$tmp/out" 2> /dev/null && grep -q -- "--model NAME" "$tmp/out" && ok ||
    bad "semipaint $args --help does not describe --model"
done

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
