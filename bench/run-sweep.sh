#!/usr/bin/env bash
# smelter sweep against merging the same configurations one by one, on demo checkpoints.
#
#   bench/run-sweep.sh [DEMO-OPTIONS...]     e.g. bench/run-sweep.sh --hidden 512 --layers 8 --vocab 8000
#
# Writes demo checkpoints (demo-checkpoints defaults unless options are given), then for the grid
# density=0.4:0.9:0.1 x lambda=0.1:0.5:0.1 (30 TIES configurations):
#   1. smelter sweep --no-stats --compare-sequential: the sweep, then every configuration merged on its own
#      in the same process (CheckpointMerger, as smelter merge), both writing checkpoints; checks they are equal
#   2. smelter sweep --stats-only: the statistics, no weights
#   3. 30 separate `smelter merge` processes (JVM start included), as a user running them one by one would
# Environment: OUTDIR (default target/sweep-bench), DEVICE (default cpu), CPUS (taskset cores, e.g. 0,1).
# Record the outcome in bench/RESULTS.md ("Sweep").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUTDIR:-target/sweep-bench}
DEVICE=${DEVICE:-cpu}
JAR=java/target/smelter-cli.jar
[ -f "$JAR" ] || ./smelter-dev build -q
PIN=()
if [ -n "${CPUS:-}" ]; then PIN=(taskset -c "$CPUS"); fi
cli() { "${PIN[@]}" ./smelter-dev java --enable-native-access=ALL-UNNAMED -jar "$JAR" "$@"; }

rm -rf "$OUT"
mkdir -p "$OUT"
cli demo-checkpoints "$OUT/demo" "$@" >/dev/null
du -sh "$OUT/demo/base"
GRID=(--grid density=0.4:0.9:0.1 --grid lambda=0.1:0.5:0.1)

echo "==> sweep (checkpoints) and one by one in the same process"
cli sweep "$OUT/demo/ties.yml" "${GRID[@]}" -o "$OUT/sweep" --device "$DEVICE" -q --no-stats --compare-sequential >"$OUT/sweep.txt"
echo "==> sweep --stats-only"
cli sweep "$OUT/demo/ties.yml" "${GRID[@]}" -o "$OUT/stats" --device "$DEVICE" -q --stats-only >"$OUT/stats.txt"

echo "==> 30 smelter merge processes"
mkdir -p "$OUT/single"
one_by_one() {
  for d in 0.4 0.5 0.6 0.7 0.8 0.9; do
    for l in 0.1 0.2 0.3 0.4 0.5; do
      cfg="$OUT/demo/single-d$d-l$l.yml"
      sed -E "s/density: [0-9.]+/density: $d/g; s/normalize: true/normalize: true, lambda: $l/" "$OUT/demo/ties.yml" >"$cfg"
      cli merge "$cfg" -o "$OUT/single/d$d-l$l" --device "$DEVICE" -q 2>/dev/null
    done
  done
}
TIMEFORMAT='%R %U %S'
{ time one_by_one; } 2>"$OUT/processes.time"
python3 - "$OUT" $(cat "$OUT/processes.time") <<'EOF'
import json, sys
out, wall, user, sys_ = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
t0, t1 = 0.0, wall
s = json.load(open(f"{out}/sweep/sweep.json"))
q = json.load(open(f"{out}/stats/sweep.json"))
t, n = s["timing"], s["timing"]["configurations"]
print(f"configurations: {n}; bytes written by the sweep: {s['bytes_written']}")
print(f"sweep, checkpoints:      {t['seconds']:.2f} s (CPU {t['cpu_seconds']:.2f} s), "
      f"{t['seconds_per_configuration']:.3f} s per configuration (shared {t['shared_seconds']:.2f} s)")
seq = t["sequential"]
print(f"one by one, in process:  {seq['seconds']:.2f} s (CPU {seq['cpu_seconds']:.2f} s), "
      f"{seq['seconds_per_configuration']:.3f} s per configuration; sweep speedup {seq['speedup']:.2f}x "
      f"(CPU time {seq['cpu_seconds'] / t['cpu_seconds']:.2f}x); identical: {seq['identical']}")
print(f"one by one, processes:   {t1 - t0:.2f} s (CPU {user + sys_:.2f} s), {(t1 - t0) / n:.3f} s per configuration; "
      f"sweep speedup {(t1 - t0) / t['seconds']:.2f}x (CPU time {(user + sys_) / t['cpu_seconds']:.2f}x)")
qt = q["timing"]
print(f"sweep, statistics only:  {qt['seconds']:.2f} s (CPU {qt['cpu_seconds']:.2f} s), "
      f"{qt['seconds_per_configuration']:.3f} s per configuration (shared {qt['shared_seconds']:.2f} s; {q['statistics']})")
EOF
