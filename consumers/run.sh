#!/usr/bin/env bash
# Installs a build into a fresh prefix and builds two programs outside the tree against that
# prefix only (never the build tree): a C one through pkg-config and a C++ one through
# find_package(convkit), shared and static. Each runs every direction and checks it against the
# reference engine. Usage: consumers/run.sh [build dir, default build]
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
src=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

fail() { echo "consumers: $*" >&2; exit 1; }
for f in include/convkit/convkit.h include/convkit/convkit.hpp include/convkit/export.hpp \
         lib/libconvkit.so.0 lib/libconvkit.a lib/cmake/convkit/convkit-config.cmake \
         lib/pkgconfig/convkit.pc bin/convkit; do
  [ -e "$prefix/$f" ] || fail "cmake --install did not install $f"
done
# The package files must point into the prefix, not back at this checkout or its build.
if grep -rlF -e "$build" -e "$src/include" "$prefix/lib/cmake" "$prefix/lib/pkgconfig"; then
  fail "the installed package files name the build or source tree"
fi
bash tests/check_exports.sh "$prefix/lib/libconvkit.so.0" "$prefix/include/convkit/convkit.h"
# A program's libconvkit.so.0 must be the installed one.
check_lib() {
  local lib
  lib=$(ldd "$1" | awk '/libconvkit\.so/ {print $3}')
  [ -n "$lib" ] && [ "$(realpath "$lib")" = "$(realpath "$prefix/lib/libconvkit.so.0")" ] ||
    fail "$1 loads libconvkit from '$lib', not $prefix/lib"
}

echo "== C consumer (pkg-config)"
export PKG_CONFIG_LIBDIR=$prefix/lib/pkgconfig PKG_CONFIG_PATH=
cflags=$(pkg-config --cflags convkit)
libs=$(pkg-config --libs convkit)
libdir=$(pkg-config --variable=libdir convkit)
echo "pkg-config: convkit $(pkg-config --modversion convkit), backends: $(pkg-config --variable=backends convkit)"
cc -std=c99 -pedantic-errors -Wall -Wextra -Werror $cflags consumers/c/consumer.c $libs -lm \
   -Wl,-rpath,"$libdir" -o "$work/c_consumer"
check_lib "$work/c_consumer"
"$work/c_consumer"

echo "== C++ consumer (find_package, shared)"
cmake -S consumers/cpp -B "$work/cpp" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$work/cpp.log" || { cat "$work/cpp.log"; fail "configure failed"; }
grep -- '-- convkit ' "$work/cpp.log"
cmake --build "$work/cpp" >/dev/null
check_lib "$work/cpp/cpp_consumer"
"$work/cpp/cpp_consumer"

echo "== C++ consumer (find_package COMPONENTS static)"
cmake -S consumers/cpp -B "$work/cpp_static" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCONSUMER_STATIC=ON >/dev/null
cmake --build "$work/cpp_static" >/dev/null
ldd "$work/cpp_static/cpp_consumer" >"$work/static.ldd"
if grep -q libconvkit "$work/static.ldd"; then fail "the static consumer loads libconvkit.so"; fi
"$work/cpp_static/cpp_consumer" | tail -1

echo "== the installed convkit program"
"$prefix/bin/convkit" bench --engine=ref --mode=corr --dt=f32 mb1ic8ih8oc8oh8kh3ph1 | tail -2
