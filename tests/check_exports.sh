#!/usr/bin/env bash
# The exported-symbol test of libconvkit.so (ctest: exported_symbols). Lists the dynamic symbols
# the library defines (nm -D) and fails on anything that is not convkit's public API: the C
# functions of convkit.h and the C++ namespace convkit (with its classes' typeinfo and vtables),
# minus the internal namespaces (core, cpu, cuda, ref, detail). So oneDNN, cuDNN, CUDA runtime,
# OpenBLAS and libstdc++ template symbols, and convkit's own backend wrappers, cannot leak.
# It also checks the SONAME and that every function convkit.h declares is exported.
# Usage: check_exports.sh <libconvkit.so> <include/convkit/convkit.h>
set -euo pipefail
lib=$1
header=$2
status=0

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
major=$(sed -n 's/^#define CONVKIT_VERSION_MAJOR \([0-9]*\)/\1/p' "$header")
if [ "$soname" != "libconvkit.so.$major" ]; then
  echo "SONAME is '$soname', expected libconvkit.so.$major"
  status=1
fi

# Demangled names of the defined dynamic symbols, without their @@CONVKIT_0 version. With
# --format=posix a line is "name type [value size]", and a C++ name may contain spaces.
mapfile -t names < <(nm -D --defined-only -C --format=posix "$lib" | awk '{
    if ($(NF) ~ /^[0-9a-f]+$/ && $(NF-1) ~ /^[0-9a-f]+$/) n = NF - 3; else n = NF - 2;
    s = $1; for (i = 2; i <= n; ++i) s = s " " $i; print s }' | sed -E 's/@@?CONVKIT_[0-9]+$//')

internal='^(typeinfo for |typeinfo name for |vtable for |.* )?convkit::(core|cpu|cuda|ref|detail)::'
public='^(convkit_[a-z0-9_]+|convkit::.*|typeinfo for convkit::.*|typeinfo name for convkit::.*|vtable for convkit::.*|CONVKIT_[0-9]+)$'
bad=()
c_api=0
cpp_api=0
for n in "${names[@]}"; do
  if [[ $n =~ $internal ]] || ! [[ $n =~ $public ]]; then
    bad+=("$n")
  elif [[ $n == convkit_* ]]; then
    c_api=$((c_api + 1))
  elif [[ $n == convkit::* ]]; then
    cpp_api=$((cpp_api + 1))
  fi
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "libconvkit.so exports ${#bad[@]} symbol(s) outside the public API, e.g.:"
  printf '  %s\n' "${bad[@]:0:40}"
  status=1
fi

# Every function convkit.h declares is there. (Looked up in an array, not through `printf | grep
# -q`: grep's early exit would fail the pipe under pipefail now and then.)
declare -A exported=()
for n in "${names[@]}"; do exported[$n]=1; done
missing=()
for f in $(grep -oE '\bconvkit_[a-z0-9_]+\(' "$header" | tr -d '(' | sort -u); do
  [ -n "${exported[$f]:-}" ] || missing+=("$f")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "convkit.h declares functions libconvkit.so does not export: ${missing[*]}"
  status=1
fi
# A few C++ entry points and the Error typeinfo (catching by type across the library needs it).
all=$(printf '%s\n' "${names[@]}")
for f in 'convkit::convolution_forward(' 'convkit::conv_transpose_forward(' 'convkit::Tensor::Tensor(' \
         'typeinfo for convkit::Error'; do
  [[ $all == *"$f"* ]] || { echo "libconvkit.so does not export $f"; status=1; }
done

echo "$lib: SONAME $soname, ${#names[@]} exported symbols: $c_api C, $cpp_api C++ (convkit::), ${#bad[@]} outside the API, ${#missing[@]} of convkit.h missing"
exit $status
