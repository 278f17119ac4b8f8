#!/usr/bin/env bash
# The GPU benchmark suite and the PyTorch comparison in one call on the GPU machine. Builds nothing.
#
#   here:   bench/pack-gpu.sh                          build, then pack the jar and a Java runtime into .gpu/
#   there:  bash .gpu/run.sh bench/run-gpu.sh [PART]   (device tool, carry [".gpu"])
#
# PART (default all; estimated 6 to 8 minutes on an H100, not yet run on one: the device tool allows 10):
#   targets  copy floor; CUDA merges at N=4, bf16 and f32, 256Mi elements (512 MiB / 1 GiB per tensor),
#            top-k threshold, CKA (64Ki x 1024), call overhead; then bench/torch_merge.py
#   matrix   copy floor; every method x N=2,4,8 x bf16/f32 at 2Mi and 32Mi elements (4 MiB .. 128 MiB per tensor)
#   all      targets, then matrix
#   e2e      bench/run-e2e.sh on CUDA: whole `smelter merge` runs of 0.5 GB checkpoints (base + 3 experts,
#            generated under /tmp, about 2 minutes) against the I/O floor of the machine's disk
#   torch    bench/torch_merge.py only
#   report   the tables from the results already there
# Results (JMH JSON and logs, torch.json, report.md) go to $OUT/bench when the device tool's $OUT is
# set, so whatever finished comes back even if the call runs out of time; else to bench/target/results-gpu.
# The same tables here, from the fetched files:
#   java -cp bench/target/benchmarks.jar dev.smelter.bench.Report DIR/*.json --torch DIR/torch.json
# Extra JMH options for every run: JMH_ARGS="...". Record the outcome in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PART=${1:-all}
JAR=.gpu/files/bench/target/benchmarks.jar
[ -f "$JAR" ] || JAR=bench/target/benchmarks.jar
RES=${OUT:+$OUT/bench}
RES=${RES:-bench/target/results-gpu}
mkdir -p "$RES"

command -v java >/dev/null || { echo "run-gpu.sh: no java on PATH: run me as 'bash .gpu/run.sh bench/run-gpu.sh'" >&2; exit 2; }
[ -f "$JAR" ] || { echo "run-gpu.sh: $JAR is missing: run bench/pack-gpu.sh where Maven is, carry .gpu" >&2; exit 2; }

# shellcheck disable=SC2206
EXTRA=(${JMH_ARGS:-})
COMMON=(-f 1 -wi 2 -w 200ms -i 3 -r 300ms -bm avgt)

jmh() {  # jmh NAME JMH-ARGS...: one JMH run, results in $RES/NAME.json, log in $RES/NAME.log
  local name=$1
  shift
  echo "==> $name: $*"
  local t0=$SECONDS
  if ! java --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow -jar "$JAR" "$@" \
      "${COMMON[@]}" "${EXTRA[@]}" -rf json -rff "$RES/$name.json" >"$RES/$name.log" 2>&1; then
    echo "    failed, see $RES/$name.log"
  fi
  grep -E '^(skipped|.*Exception)' "$RES/$name.log" | sort | uniq -c | head -5 || true
  echo "    $((SECONDS - t0)) s"
}

machine() {
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null |
      sed 's/^/gpu: /' || echo "gpu: nvidia-smi failed"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "java: $(java -version 2>&1 | head -1)"
    echo "smelter: $(java --enable-native-access=ALL-UNNAMED -cp "$JAR" dev.smelter.bench.Info 2>&1 | tail -1)"
  } | tee "$RES/machine.txt"
}

copy_floor() {
  jmh copy-cuda CopyBenchmark -p copy=cuda -p bytes=64Mi,1Gi
}

targets() {
  jmh merge-cuda-256Mi MergeBenchmark -p backend=cuda -p method=linear,ta,ties,ties_global,dare,dare_l1,breadcrumbs,della,sce \
    -p models=4 -p dtype=BF16,F32 -p elements=256Mi
  jmh topk-cuda TopKBenchmark -p backend=cuda -p dtype=BF16,F32 -p elements=2Mi,256Mi
  jmh cka-cuda CkaBenchmark -p backend=cuda -p dtype=F32,BF16 -p rows=64Ki -p cols=1024
  # The SIMT product kernel for comparison; its rows are relabelled so the report lists them apart.
  (export SMELTER_CUDA_PRODUCT=simt; jmh cka-cuda-simt CkaBenchmark -p backend=cuda -p dtype=F32 -p rows=64Ki -p cols=1024)
  sed -i 's/"backend" : "cuda"/"backend" : "cuda-simt"/' "$RES/cka-cuda-simt.json" 2>/dev/null || true
  jmh overhead-cuda OverheadBenchmark -p backend=cuda -p elements=16
}

torch_part() {
  echo "==> torch: bench/torch_merge.py"
  local t0=$SECONDS
  if ! python3 bench/torch_merge.py --json "$RES/torch.json" 2>&1 | tee "$RES/torch.log"; then
    echo "    torch_merge.py failed, see $RES/torch.log"
  fi
  echo "    $((SECONDS - t0)) s"
}

matrix() {
  for size in 2Mi 32Mi; do
    jmh "merge-cuda-$size" MergeBenchmark -p backend=cuda -p method=linear,ta,ties,ties_global,dare \
      -p models=2,4,8 -p dtype=BF16,F32 -p elements="$size"
  done
}

e2e() {
  local cli=.gpu/files/java/target/smelter-cli.jar
  [ -f "$cli" ] || cli=java/target/smelter-cli.jar
  echo "==> e2e: bench/run-e2e.sh on CUDA"
  local t0=$SECONDS
  # shellcheck disable=SC2086
  JAR="$cli" JAVA=java DEVICE=cuda OUTDIR=/tmp/smelter-e2e REPS="${E2E_REPS:-2}" \
    bench/run-e2e.sh ${E2E_DEMO:---hidden 2048 --layers 4 --vocab 32000} >"$RES/e2e.log" 2>&1 || echo "    failed, see $RES/e2e.log"
  cp /tmp/smelter-e2e/results.md "$RES/e2e.md" 2>/dev/null && cat "$RES/e2e.md"
  cp /tmp/smelter-e2e/*.log "$RES/" 2>/dev/null || true
  echo "    $((SECONDS - t0)) s"
}

report() {
  local files=()
  for f in "$RES"/*.json; do
    case "$f" in */torch.json) ;; *) [ -s "$f" ] && files+=("$f") ;; esac
  done
  local torch=()
  if [ -s "$RES/torch.json" ]; then torch=(--torch "$RES/torch.json"); fi
  if [ ${#files[@]} -eq 0 ] && [ ${#torch[@]} -eq 0 ]; then echo "no results in $RES"; return; fi
  java -cp "$JAR" dev.smelter.bench.Report "${torch[@]}" "${files[@]}" | tee "$RES/report.md"
}

case "$PART" in
  all) machine; copy_floor; targets; torch_part; matrix; report ;;
  targets) machine; copy_floor; targets; torch_part; report ;;
  matrix) machine; copy_floor; matrix; report ;;
  torch) torch_part; report ;;
  report) report ;;
  e2e) machine; e2e ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2 ;;
esac
echo
echo "results: $RES"
