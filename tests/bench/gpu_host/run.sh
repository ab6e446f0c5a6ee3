# On the GPU host (after pack.sh here; the call carries .whl): set up, smoke test, CUDA tests, GPU benchmark,
# CUDA tuning of ResNet-18, and the benchmark with its records. Results under $OUT.
source .whl/setup.sh || exit 1
cd /tmp/pkg/slimgraph
L=$OUT/log.txt
python3 -c "import xgboost; print('xgboost', xgboost.__version__)" 2>&1 | tee -a $L
stage() { echo "=== $1 $(date +%T)" | tee -a $L; }
stage smoke
timeout 40 python3 - <<'PY' 2>&1 | tee -a $L
import time; t=time.time()
import torch, tvm
from slimgraph.codegen import cuda
print("torch", torch.__version__, torch.cuda.is_available(), "tvm", tvm.__version__)
print("runtime:", cuda.load_cuda_runtime(), "gpu_present:", cuda.gpu_present(), "nvcc:", cuda.find_nvcc())
import slimgraph
m = slimgraph.compile("digit_cnn", target="cuda", output="/tmp/dc.so")
print("digit_cnn:", m.report.max_abs_diff, m.report.check_note, m.report.device_binary, round(time.time()-t, 1), "s")
PY
stage tests
# straight to a file under $OUT: a pipe into tail lost the whole report when the stage ran out of time
timeout ${T_TESTS:-180} python3 -m pytest -q -rfE tests/test_cuda.py -p no:cacheprovider > $OUT/tests.txt 2>&1
tail -30 $OUT/tests.txt >> $L
stage bench
timeout ${T_BENCH:-220} python3 -m slimgraph.tests.bench.bench_cuda --models resnet18,mobilenet_v2,bert_encoder,digit_cnn --runs 30 --json $OUT/bench.json 2>&1 | tail -25 >> $L
stage tune
timeout ${T_TUNE:-90} python3 -m slimgraph.cli tune resnet18 --target cuda --trials ${TRIALS:-192} --db /tmp/db --runs 0 2>&1 | grep -v "━" | tail -45 >> $L
cp /tmp/db/database_workload.json /tmp/db/database_tuning_record.json $OUT/
stage bench_tuned
timeout ${T_BENCH2:-60} python3 -m slimgraph.tests.bench.bench_cuda --models resnet18 --runs 30 --db /tmp/db --json $OUT/bench_tuned.json 2>&1 | tail -12 >> $L
stage end
