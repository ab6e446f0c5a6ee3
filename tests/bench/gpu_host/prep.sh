# On the GPU host, first (carrying .whl2): put xgboost (MetaSchedule's cost model) into /tmp/site, look at the machine.
mkdir -p /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl && echo XGB_OK
nvidia-smi -L; nproc; grep -m1 'model name' /proc/cpuinfo; ls /usr/local/cuda/lib64/libcudart.so* 2>&1 | head -2; which nvcc
