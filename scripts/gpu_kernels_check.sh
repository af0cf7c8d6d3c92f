# The GPU check of the kernels: compiled kernel tests, then benchmarks/attention_kernels.py and
# benchmarks/block_topk_variants.py. Run on a CUDA machine from the repo root; results go under $OUT.
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
export PYTHONPATH=.
timeout 170 python3 -m pytest tests/kernels -q -p no:cacheprovider -o addopts="" -x > $OUT/kernel_tests.log 2>&1; echo "tests rc=$?"; tail -3 $OUT/kernel_tests.log
timeout 330 python3 benchmarks/attention_kernels.py --out $OUT > $OUT/bench.log 2>&1; echo "bench rc=$?"; grep -E "context (131072|524288)" $OUT/bench.log; tail -4 $OUT/bench.log
timeout 200 python3 benchmarks/block_topk_variants.py --out $OUT > $OUT/variants.log 2>&1; echo "variants rc=$?"; cat $OUT/block_topk_variants.md
