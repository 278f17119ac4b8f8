#!/usr/bin/env bash
# End-to-end `smelter merge` of a multi-GB checkpoint set against the I/O floor of the same disk.
#
#   bench/run-e2e.sh [DEMO-OPTIONS...]     default: --hidden 2048 --layers 8 --vocab 32000 (1.1 GB per bf16 checkpoint)
#
# Writes demo checkpoints (a base and three experts) with 1 GB shards, then for each merge config:
#   floor:  the page cache of the inputs dropped, every input file read once with `cat` (sequential), plus the
#           output's size written once with `dd ... conv=fsync`; the floor is the sum of the two times
#   merge:  the page cache dropped again, `smelter merge CONFIG -o OUT` (JVM start, planning, fsync included)
#   (floor and merge alternate REPS times, default 3; the table gives medians)
#   warm:   the same merge once more with the inputs in the page cache (for reading the compute part)
# Dropping the page cache needs no root: posix_fadvise(POSIX_FADV_DONTNEED) on every file, checked with fincore.
# Environment: OUTDIR (default target/e2e-bench), DEVICE (cpu, cuda, auto; default auto), CPUS (taskset cores), JAR, JAVA,
#   METHODS (default "ties dare_ties task_arithmetic"), KEEP=1 to reuse existing checkpoints.
# Record the outcome in bench/RESULTS.md ("End to end").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUTDIR:-target/e2e-bench}
DEVICE=${DEVICE:-auto}
METHODS=${METHODS:-ties dare_ties task_arithmetic}
JAR=${JAR:-java/target/smelter-cli.jar}
[ -f "$JAR" ] || ./smelter-dev build -q
PIN=()
if [ -n "${CPUS:-}" ]; then PIN=(taskset -c "$CPUS"); fi
# shellcheck disable=SC2206
JAVA_CMD=(${JAVA:-./smelter-dev java})  # JAVA=java where only a runtime is on PATH (the GPU machine)
cli() { "${PIN[@]}" "${JAVA_CMD[@]}" --enable-native-access=ALL-UNNAMED -jar "$JAR" "$@"; }
DEMO=("$@")
[ ${#DEMO[@]} -gt 0 ] || DEMO=(--hidden 2048 --layers 8 --vocab 32000)

drop_cache() {  # drop_cache DIR...: evict every file under the directories from the page cache
  find "$@" -type f -print0 | xargs -0 python3 -c '
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)'
}
resident() {  # resident DIR...: bytes of those files in the page cache
  find "$@" -type f -name '*.safetensors' -print0 | xargs -0 fincore -b -n -o RES | awk '{s += $1} END {print s + 0}'
}
seconds() { python3 -c 'import time; print(f"{time.monotonic():.6f}")'; }

mkdir -p "$OUT"
if [ "${KEEP:-0}" != 1 ] || [ ! -d "$OUT/demo/base" ]; then
  rm -rf "$OUT/demo"
  echo "==> demo checkpoints ${DEMO[*]}"
  cli demo-checkpoints "$OUT/demo" "${DEMO[@]}" --max-shard-size 1GB >/dev/null
fi
sed -E 's/merge_method: ties/merge_method: task_arithmetic/; s/, density: [0-9.]+//' "$OUT/demo/ties.yml" \
  >"$OUT/demo/task_arithmetic.yml"
sync

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores${CPUS:+ (pinned to $CPUS)}"
  echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB; disk: $(df -h "$OUT" | awk 'NR == 2 {print $1, $2}')"
  echo "smelter: $(cli --version 2>&1 | tail -1); device: $DEVICE"
  echo "checkpoints: ${DEMO[*]}; $(du -sh "$OUT/demo/base" | cut -f1) per checkpoint"
} | tee "$OUT/machine.txt"

REPS=${REPS:-3}
printf '\n| config | inputs | read GB | write GB | floor read s | floor write s | floor s | merge s (cold) | merge / floor | merge s (warm) | peak anon |\n' \
  | tee "$OUT/results.md"
printf '|---|---|---|---|---|---|---|---|---|---|---|\n' | tee -a "$OUT/results.md"
for method in $METHODS; do
  cfg="$OUT/demo/$method.yml"
  mapfile -t inputs < <(grep -E '^(base_model|  - model):' "$cfg" | awk '{print $NF}' | sed "s|^|$OUT/demo/|")
  read_bytes=$(du -cb "${inputs[@]}" | tail -1 | cut -f1)
  write_bytes=$(du -cb "${inputs[0]}" | tail -1 | cut -f1)  # the merged checkpoint is the size of the base
  times=()
  for rep in $(seq "$REPS"); do  # floor and merge alternate, so a slow spell of the disk hits both
    rm -rf "$OUT/merged" "$OUT/floor.bin"
    sync
    # The floor: sequential read of every input, then sequential write of the output's bytes.
    drop_cache "${inputs[@]}"
    [ "$(resident "${inputs[@]}")" -lt $((read_bytes / 100)) ] || echo "warning: inputs still in the page cache"
    t0=$(seconds)
    find "${inputs[@]}" -type f -name '*.safetensors' -print0 | xargs -0 cat >/dev/null
    t1=$(seconds)
    dd if=/dev/zero of="$OUT/floor.bin" bs=64M count=$(((write_bytes + (64 << 20) - 1) >> 26)) conv=fsync status=none
    t2=$(seconds)
    rm -f "$OUT/floor.bin"
    sync
    # The merge from a cold page cache.
    drop_cache "${inputs[@]}"
    t3=$(seconds)
    cli merge "$cfg" -o "$OUT/merged" --device "$DEVICE" >"$OUT/$method.log" 2>&1
    t4=$(seconds)
    times+=("$t0 $t1 $t2 $t3 $t4")
  done
  peak=$(grep -oE 'peak anonymous memory [0-9.]+ [kMGT]?i?B' "$OUT/$method.log" | tail -1 | awk '{print $(NF-1), $NF}')
  t5=$(seconds)  # warm: the inputs are in the page cache now
  cli merge "$cfg" -o "$OUT/merged" --device "$DEVICE" --overwrite -q >"$OUT/$method.warm.log" 2>&1
  t6=$(seconds)
  python3 - "$method" "${#inputs[@]}" "$read_bytes" "$write_bytes" "$t5" "$t6" "${peak:-?}" "${times[@]}" <<'EOF' | tee -a "$OUT/results.md"
import statistics, sys
m, n, rb, wb = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
warm, peak = float(sys.argv[6]) - float(sys.argv[5]), sys.argv[7]
runs = [[float(x) for x in r.split()] for r in sys.argv[8:]]
med = statistics.median
rd, wr = med([r[1] - r[0] for r in runs]), med([r[2] - r[1] for r in runs])
floor, merge = med([r[2] - r[0] for r in runs]), med([r[4] - r[3] for r in runs])
print(f"| {m} | {n} | {rb / 1e9:.2f} | {wb / 1e9:.2f} | {rd:.2f} | {wr:.2f} | {floor:.2f} | {merge:.2f} | {merge / floor:.2f}x | {warm:.2f} | {peak} |")
EOF
done
echo "(medians of $REPS runs; floor and merge alternate)" | tee -a "$OUT/results.md"
echo
echo "results: $OUT/results.md (logs: $OUT/*.log)"
