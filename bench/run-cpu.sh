#!/usr/bin/env bash
# The short CPU benchmark suite (about 8 minutes on 2 cores) and its report.
#
#   bench/run-cpu.sh            build bench/target/benchmarks.jar if it is missing, run, print the tables
#   bench/run-cpu.sh --build    rebuild the jar first (native, java, bench)
#
# Environment:
#   OUTDIR    where JSON results, JMH logs and report.md go (default bench/target/results-cpu)
#   CPUS      run pinned to these cores with taskset, e.g. CPUS=0,1 for the 2-core target on a bigger machine
#   JMH_ARGS  extra JMH options for every run, e.g. "-i 5 -r 2s"
# What is measured and how to read it: bench/README.md. Record the outcome in bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
JAR=bench/target/benchmarks.jar
OUT=${OUTDIR:-bench/target/results-cpu}

if [ "${1:-}" = "--build" ] || [ ! -f "$JAR" ]; then
  echo "==> building $JAR"
  ./smelter-dev mvn -o -q -DskipTests package -pl native,java,bench ||
    ./smelter-dev mvn -q -DskipTests package -pl native,java,bench
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.json
cp "$JAR" "$OUT/benchmarks.jar"  # a snapshot: rebuilding during the run does not disturb it
JAR=$OUT/benchmarks.jar

PIN=()
if [ -n "${CPUS:-}" ]; then PIN=(taskset -c "$CPUS"); fi
# shellcheck disable=SC2206
EXTRA=(${JMH_ARGS:-})
COMMON=(-f 1 -wi 2 -w 500ms -i 3 -r 1s -bm avgt)

jmh() {  # jmh NAME JMH-ARGS...: one JMH run, results in $OUT/NAME.json, log in $OUT/NAME.log
  local name=$1
  shift
  echo "==> $name: $*"
  local t0=$SECONDS
  if ! "${PIN[@]}" ./smelter-dev java --enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow \
      -jar "$JAR" "$@" "${COMMON[@]}" "${EXTRA[@]}" -rf json -rff "$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
    echo "    failed, see $OUT/$name.log"
  fi
  echo "    $((SECONDS - t0)) s"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores available${CPUS:+ (pinned to $CPUS)}"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "smelter: $(./smelter-dev java --enable-native-access=ALL-UNNAMED -cp "$JAR" dev.smelter.bench.Info 2>&1 | tail -1)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/machine.txt"

jmh copy CopyBenchmark -p copy=java,native -p bytes=256Mi
jmh merge-8Mi MergeBenchmark -p backend=cpu -p method=linear,ta,ties,ties_global,dare -p models=2,4,8 \
  -p dtype=BF16,F32 -p elements=8Mi
jmh merge-64Mi MergeBenchmark -p backend=cpu -p method=linear,ta,ties,ties_global,dare,dare_l1,breadcrumbs,della,sce -p models=4 \
  -p dtype=BF16,F32 -p elements=64Mi
jmh topk TopKBenchmark -p backend=cpu -p dtype=BF16,F32 -p elements=8Mi,64Mi
jmh cka CkaBenchmark -p backend=cpu -p dtype=F32,BF16 -p rows=8Ki -p cols=256
jmh overhead OverheadBenchmark -p backend=cpu -p elements=16

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine.txt"
./smelter-dev java -cp "$JAR" dev.smelter.bench.Report "$OUT"/*.json | tee "$OUT/report.md"
echo
echo "results: $OUT (report.md, machine.txt, JMH JSON and logs)"
