#!/usr/bin/env bash
# Pack TVM for a GPU host that has Python 3.12, PyTorch and the CUDA toolkit but no package index,
# in what one transfer of at most 64 MiB can carry (the development workplace's GPU machine):
#   .whl/   TVM 0.27's compiler library xz-compressed with the x86 filter (259 MB -> 58 MB), the
#           rest of the tvm and tvm-ffi packages (no CUTLASS headers), and
#           setup.sh / run.sh from this folder;
#   .whl2/  the xgboost wheel (MetaSchedule's cost model) and prep.sh, sent first on its own.
# Run from the repository root; takes about 5 minutes (xz). Both folders must be git-ignored.
set -euo pipefail
here=tests/bench/gpu_host
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    -d "$work" apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 xgboost-cpu==3.4.1
mkdir -p .whl .whl2 "$work/tvm" "$work/ffi"
(cd "$work/tvm" && unzip -q "$work"/apache_tvm-*.whl)
# libtvm_ffi_testing.so stays: tvm_ffi's core loads it at import (the first GPU run failed without it)
(cd "$work/ffi" && unzip -q "$work"/apache_tvm_ffi-*.whl && rm -rf tvm_ffi/3rdparty)
tar -C "$work/ffi" -cJf .whl/ffi.tar.xz .
tar -C "$work/tvm" --exclude=tvm/lib/libtvm_compiler.so --exclude=tvm/3rdparty/cutlass -cJf .whl/tvmrest.tar.xz .
xz -T2 --x86 --lzma2=preset=9e -c "$work/tvm/tvm/lib/libtvm_compiler.so" > .whl/compiler.xz
cp "$work"/xgboost_cpu-*.whl .whl2/
cp $here/setup.sh $here/run.sh .whl/
cp $here/setup.sh $here/prep.sh .whl2/
du -sh .whl .whl2
