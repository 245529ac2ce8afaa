#!/usr/bin/env bash
# deps.sh: installs the Debian packages semipaint builds and tests with, only those missing.
set -euo pipefail
pkgs=(build-essential pkg-config libdnnl-dev libfaiss-dev libopenblas-dev libmicrohttpd-dev libcjson-dev
      libyaml-dev libturbojpeg0-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libdeflate-dev zlib1g-dev python3-torch python3-numpy curl bc
      xxd clang-14 libclang-rt-14-dev python3-pil python3-opencv yamllint)
# tests/it_deploy.sh renders the Kubernetes manifests with `kubectl kustomize`: Debian's kubectl,
# unless another package already provides the command (they would conflict over /usr/bin/kubectl).
command -v kubectl >/dev/null || pkgs+=(kubernetes-client)
[ "$#" -gt 0 ] && pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
