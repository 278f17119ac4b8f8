#!/bin/bash
# End-to-end test of the Slurm scripts on a real single-node cluster: starts munged, slurmctld and slurmd on this
# machine (configuration, state, spool, logs and the munge key under a temporary directory), generates checkpoints,
# submits scripts/slurm/merge-array.sbatch as an array of N partitions plus finalize.sbatch after it, waits, and
# compares the output byte for byte with a one-process merge; then an array missing a partition, and a sweep as an
# array (SMELTER_SUBCOMMAND=sweep), and partition 0 first (SMELTER_STATS_FIRST=1). Stops the daemons and removes the directory at the end.
#
#   scripts/slurm-test.sh            (as root; SMELTER="java ... -jar java/target/smelter-cli.jar" by default)
#
# Exit 0: identical; 1: a failure (logs printed); 77: skipped, the reason on stderr (no slurm-wlm/munge, not root,
# or the daemons do not start). With SMELTER_SLURM_INSTALL=1 and root, a missing slurm-wlm/munge is installed with
# apt-get first. N (default 3) and SMELTER_SLURM_KEEP=1 (keep the temporary directory) may be set.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-3}
skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs jobs as their user and the test starts it)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
  if [ "${SMELTER_SLURM_INSTALL:-0}" = 1 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
      || skip "apt-get install slurm-wlm munge failed"
  else
    skip "slurmctld, slurmd, munged or sbatch not installed (apt-get install slurm-wlm munge, or SMELTER_SLURM_INSTALL=1)"
  fi
fi
if [ -z "${SMELTER:-}" ]; then
  jar=$repo/java/target/smelter-cli.jar
  [ -f "$jar" ] || fail "no $jar: build it (./smelter-dev build) or set SMELTER to the smelter command"
  java=${JAVA:-java}
  SMELTER="$java --enable-native-access=ALL-UNNAMED -jar $jar"
fi
export SMELTER

tmp=$(mktemp -d /tmp/smelter-slurm.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
  for f in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munged.pid"; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  for f in "$tmp/slurmd.pid" "$tmp/slurmctld.pid" "$tmp/munged.pid"; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  if [ "${SMELTER_SLURM_KEEP:-0}" = 1 ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
logs() {
  for f in "$tmp"/*.log "$tmp"/work/*.out; do
    [ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f"; }
  done >&2
}

# munge: our own key, socket and state, so a system munged (if any) is left alone.
mkdir -p "$tmp/munge" && chmod 700 "$tmp/munge"
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
sock=$tmp/munge/munge.socket
munged --force --key-file="$tmp/munge/munge.key" --socket="$sock" --pid-file="$tmp/munged.pid" \
  --log-file="$tmp/munged.log" --seed-file="$tmp/munge/seed" 2>"$tmp/munged.err" \
  || { cat "$tmp/munged.err" >&2; skip "munged does not start"; }

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ctld_port=$(free_port)
d_port=$(free_port)
mkdir -p "$tmp/state" "$tmp/spool" "$tmp/work"
cat > "$tmp/slurm.conf" <<CONF
ClusterName=smeltertest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -f "$SLURM_CONF" 2>"$tmp/slurmctld.err" || { cat "$tmp/slurmctld.err" >&2; logs; skip "slurmctld does not start"; }
slurmd -f "$SLURM_CONF" 2>"$tmp/slurmd.err" || { cat "$tmp/slurmd.err" >&2; logs; skip "slurmd does not start"; }
for _ in $(seq 60); do
  state=$(sinfo -h -n "$host" -o %t 2>/dev/null)
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 1
done
case "$state" in idle*|mix*|alloc*) ;; *) logs; skip "the node did not come up (state '$state')" ;; esac
echo "slurm: $(sinfo -V) on $host, $cpus CPUs, node $state"

# Checkpoints and the reference: one process, one device.
cd "$tmp/work" || fail "no work directory"
$SMELTER demo-checkpoints models >/dev/null || fail "demo-checkpoints failed"
opts=(--device cpu --max-shard-size 1MB --trim-scope model)
$SMELTER merge models/ties.yml one "${opts[@]}" -q || fail "the one-process merge failed"

wait_jobs() {  # until none of the jobs is queued or running (10 minutes at most)
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
    sleep 1
  done
  logs; fail "jobs $1 did not end in 10 minutes"
}
state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z]*' | head -1 | cut -d= -f2; }
same_as_one() {  # every file of both outputs, byte for byte (README.md names the output, so its title is mapped)
  local out=$1 name f
  [ -d "$out" ] || { logs; fail "no output directory $out"; }
  ls -a . | grep -q "^\.$out\.part-" && fail "the staging directory of $out is left"
  diff <(cd one && ls) <(cd "$out" && ls) || fail "$out: different files"
  for f in one/*; do
    name=$(basename "$f")
    if [ "$name" = README.md ]; then
      cmp <(sed "s/^# one\$/# $out/" "$f") "$out/README.md" || fail "$out/README.md differs"
    else
      cmp "$f" "$out/$name" || fail "$out/$name differs"
    fi
  done
}
args=(--cpus-per-task=1 --chdir="$tmp/work")
scripts=$repo/scripts/slurm

# 1. The array of N partitions and the finalize job after it, as submit.sh submits them.
start=$(date +%s.%N)
ids=$(SBATCH_ARGS="${args[*]}" "$scripts/submit.sh" "$N" models/ties.yml "$tmp/work/parts" "${opts[@]}") \
  || { logs; fail "sbatch failed"; }
read -r array final <<<"$ids"
echo "submitted array job $array (partitions 0..$((N - 1))) and finalize job $final"
wait_jobs "$array,$final"
end=$(date +%s.%N)
for j in $(seq 0 $((N - 1))); do
  st=$(state "${array}_$j")
  echo "array task $j: $st"
  [ "$st" = COMPLETED ] || { logs; fail "array task $j: $st"; }
done
st=$(state "$final")
echo "finalize job: $st: $(cat "$tmp/work/smelter-finalize-$final.out")"
[ "$st" = COMPLETED ] || { logs; fail "finalize: $st"; }
same_as_one parts
echo "OK: $N Slurm array tasks + finalize wrote $(ls parts | wc -l) files byte-identical to the one-process merge" \
  "($(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s from sbatch to the end)"

# 2. A partition missing (its task failed or was never run): the finalize job fails naming it and nothing appears;
#    the partition rerun on its own, as a one-task array, finishes last and puts the checkpoint in place.
last=$((N - 1))
array=$(sbatch --parsable "${args[@]}" --array=0-$((last - 1)) "$scripts/merge-array.sbatch" "$N" models/ties.yml \
  "$tmp/work/rerun" "${opts[@]}") || { logs; fail "sbatch failed"; }
final=$(sbatch --parsable "${args[@]}" --dependency=afterany:"$array" "$scripts/finalize.sbatch" models/ties.yml \
  "$tmp/work/rerun" "${opts[@]}") || { logs; fail "sbatch failed"; }
wait_jobs "$array,$final"
st=$(state "$final")
echo "without partition $last, the finalize job: $st: $(tail -n 1 "$tmp/work/smelter-finalize-$final.out")"
[ "$st" = FAILED ] || { logs; fail "the finalize job should fail with a partition missing: $st"; }
grep -q "partitions \[$last\] of $N have not finished" "$tmp/work/smelter-finalize-$final.out" \
  || fail "the finalize job does not name partition $last"
[ -e rerun ] && fail "an output appeared before every partition was done"
again=$(sbatch --parsable "${args[@]}" --array=$last "$scripts/merge-array.sbatch" "$N" models/ties.yml \
  "$tmp/work/rerun" "${opts[@]}") || { logs; fail "sbatch failed"; }
wait_jobs "$again"
st=$(state "${again}_$last")
echo "partition $last rerun on its own: $st: $(tail -n 2 "$tmp/work/smelter-merge-${again}_$last.out" | head -n 1)"
[ "$st" = COMPLETED ] || { logs; fail "the rerun: $st"; }
same_as_one rerun
echo "OK: a missing partition fails the finalize job; rerun alone, it completes a byte-identical checkpoint"

# 3. A sweep as a job array: six configurations over N partitions, each configuration's checkpoint byte-identical to
#    the one-process sweep's.
grid=(--grid density=0.4,0.6,0.8 --grid lambda=0.5,1)
$SMELTER sweep models/ties.yml sweep-one "${opts[@]}" "${grid[@]}" -q >/dev/null || fail "the one-process sweep failed"
ids=$(SMELTER_SUBCOMMAND=sweep SBATCH_ARGS="${args[*]}" "$scripts/submit.sh" "$N" models/ties.yml "$tmp/work/sweep-parts" \
  "${opts[@]}" "${grid[@]}") || { logs; fail "sbatch failed"; }
read -r array final <<<"$ids"
wait_jobs "$array,$final"
for j in $(seq 0 $((N - 1))); do
  st=$(state "${array}_$j")
  [ "$st" = COMPLETED ] || { logs; fail "sweep array task $j: $st"; }
done
[ "$(state "$final")" = COMPLETED ] || { logs; fail "sweep finalize: $(state "$final")"; }
[ -d sweep-parts ] || { logs; fail "no sweep output"; }
diff <(cd sweep-one && ls) <(cd sweep-parts && ls) || fail "the sweeps have different files"
for d in sweep-one/*/; do
  name=$(basename "$d")
  diff -r "sweep-one/$name" "sweep-parts/$name" >/dev/null || fail "configuration $name differs"
done
cmp sweep-one/sweep.csv sweep-parts/sweep.csv || fail "sweep.csv differs"
echo "OK: a sweep of $(ls -d sweep-parts/*/ | wc -l) configurations as $N Slurm array tasks + finalize: every checkpoint" \
  "byte-identical to the one-process sweep"

# 4. SMELTER_STATS_FIRST=1: partition 0 computes the model-wide thresholds alone, the others read them.
ids=$(SMELTER_STATS_FIRST=1 SBATCH_ARGS="${args[*]}" "$scripts/submit.sh" "$N" models/ties.yml "$tmp/work/statsfirst" \
  "${opts[@]}") || { logs; fail "sbatch failed"; }
read -r array final <<<"$ids"
wait_jobs "$final"
[ "$(state "$final")" = COMPLETED ] || { logs; fail "finalize after the statistics-first array: $(state "$final")"; }
same_as_one statsfirst
read_by=$(grep -l "model-wide statistics read from" smelter-merge-"${array}"_*.out | wc -l)
[ "$read_by" = $((N - 1)) ] || { logs; fail "$read_by of the $((N - 1)) later partitions read the thresholds partition 0 left"; }
echo "OK: with SMELTER_STATS_FIRST=1 partition 0 computed the thresholds and the other $read_by read them; byte-identical"
