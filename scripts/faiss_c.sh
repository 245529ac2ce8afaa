#!/usr/bin/env bash
# faiss_c.sh: builds FAISS's C API (libfaiss_c.a) from Debian's own faiss source package into .deps/ (cached).
#
# Debian's libfaiss-dev ships the static libfaiss.a and the C API headers (faiss/c_api/*.h) but no
# compiled C API. This script fetches the matching source package with `apt-get source`, compiles
# c_api/*.cpp (plus c_api/impl and c_api/utils; not c_api/gpu) against the installed headers, and
# archives the objects into .deps/faiss_c/libfaiss_c.a. It exits at once when that archive exists
# and is newer than this script. No FAISS source is kept in the repository (.deps/ is ignored).
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
root=$PWD
out=.deps/faiss_c
lib=$out/libfaiss_c.a
if [ -f "$lib" ] && [ "$lib" -nt "$self" ]; then exit 0; fi

log() { echo "faiss_c: $*" >&2; }
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

ver=$(dpkg-query -W -f='${Version}' libfaiss-dev 2>/dev/null || true)
if [ -z "$ver" ]; then
  log "libfaiss-dev is not installed (scripts/deps.sh installs it)"; exit 1
fi
if ! command -v dpkg-source >/dev/null; then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends dpkg-dev >&2
fi
# The binary version may carry a binNMU suffix (1.7.3-2+b1); the source version drops it.
srcver=${ver%%+b*}

src=.deps/faiss-src
if [ ! -f "$src/c_api/Index_c.cpp" ]; then
  mkdir -p .deps/dl
  if ! (cd .deps/dl && apt-get source --download-only "faiss=$srcver" >/dev/null 2>&1); then
    # No deb-src entry yet: add one for the suite(s) of the deb entries, in a file of our own.
    list=/etc/apt/sources.list.d/semipaint-deb-src.sources
    if [ ! -f "$list" ]; then
      log "adding a deb-src entry ($list)"
      suites=$(grep -h '^Suites:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | cut -d: -f2- | xargs || true)
      uris=$(grep -h '^URIs:' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | cut -d: -f2- | xargs || true)
      [ -n "$suites" ] || suites="$(. /etc/os-release && echo "$VERSION_CODENAME")"
      [ -n "$uris" ] || uris="http://deb.debian.org/debian"
      printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uris" "$suites" | $sudo tee "$list" >/dev/null
    fi
    $sudo apt-get update -q >&2
    (cd .deps/dl && apt-get source --download-only "faiss=$srcver" >&2)
  fi
  rm -rf "$src"
  dsc=$(ls .deps/dl/faiss_*.dsc | head -1)
  dpkg-source --no-check -x "$dsc" "$src" >/dev/null
fi

log "compiling the C API of faiss $srcver"
obj=$out/obj
rm -rf "$obj"; mkdir -p "$obj"
# The installed headers (/usr/include/faiss) are the ones libfaiss.a was built with; only the
# C API's own directory is added so that its sources find their private headers.
CXX=${CXX:-g++}
files=$(cd "$src/c_api" && ls *.cpp impl/*.cpp utils/*.cpp 2>/dev/null)
pids=()
jobs=$(nproc 2>/dev/null || echo 2); [ "$jobs" -gt 2 ] && jobs=2
for f in $files; do
  o=$obj/$(echo "${f%.cpp}" | tr / _).o
  "$CXX" -std=c++17 -O2 -DNDEBUG -fPIC -fopenmp -I"$src/c_api" -c "$src/c_api/$f" -o "$o" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$jobs" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p"; done
rm -f "$lib.tmp"
ar rcs "$lib.tmp" "$obj"/*.o
mv "$lib.tmp" "$lib"
rm -rf "$obj"
log "built $root/$lib"
