# On the GPU host, sourced from the repository root: TVM into /tmp/site (from .whl, see pack.sh), xgboost
# from .whl/.whl2 if there, slimgraph copied to /tmp/pkg/slimgraph; PYTHONPATH, PATH and the CUDA runtime set.
t0=$(date +%s)
export PYTHONUNBUFFERED=1
mkdir -p /tmp/site /tmp/pkg
if [ ! -f /tmp/site/tvm/lib/libtvm_compiler.so ]; then
  tar -C /tmp/site -xJf .whl/ffi.tar.xz || exit 1
  tar -C /tmp/site -xJf .whl/tvmrest.tar.xz || exit 1
  python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.whl/compiler.xz'), open('/tmp/site/tvm/lib/libtvm_compiler.so.part','wb'), 1<<24)" || exit 1
  mv /tmp/site/tvm/lib/libtvm_compiler.so.part /tmp/site/tvm/lib/libtvm_compiler.so
fi
for w in .whl/*.whl .whl2/*.whl; do [ -f "$w" ] && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$w"; done
rm -rf /tmp/pkg/slimgraph && mkdir /tmp/pkg/slimgraph && cp -r $(ls -A | grep -v -x -e .whl -e .whl2 -e .git) /tmp/pkg/slimgraph/
export PYTHONPATH=/tmp/pkg:/tmp/site
cudart=$(ls /usr/local/cuda/lib64/libcudart.so.13 /usr/local/cuda/targets/x86_64-linux/lib/libcudart.so.13 2>/dev/null | head -1)
[ -z "$cudart" ] && cudart=$(python3 -c "import nvidia,os,glob;print((glob.glob(os.path.join(list(nvidia.__path__)[0],'**','libcudart.so.13*'),recursive=True) or [''])[0])" 2>/dev/null)
echo "cudart: $cudart"
[ -n "$cudart" ] && export LD_LIBRARY_PATH=$(dirname $cudart):$LD_LIBRARY_PATH
export PATH=/usr/local/cuda/bin:$PATH
echo "setup took $(( $(date +%s) - t0 )) s; nvcc: $(which nvcc)"
