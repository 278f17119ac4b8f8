#!/bin/bash
# End-to-end test of the Slurm scripts on a real single-node cluster: starts munged, slurmctld and slurmd on this
# machine (configuration, state, spool, logs and the munge key under a temporary directory), generates checkpoints,
# submits scripts/slurm/merge-array.sbatch as an array of N partitions plus finalize.sbatch after it, waits, and
# compares the output byte for byte with a one-process merge. Stops the daemons and removes the directory at the end.
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

start=$(date +%s.%N)
ids=$(SBATCH_ARGS="--cpus-per-task=1 --chdir=$tmp/work" "$repo/scripts/slurm/submit.sh" "$N" models/ties.yml "$tmp/work/parts" "${opts[@]}") \
  || { logs; fail "sbatch failed"; }
read -r array final <<<"$ids"
echo "submitted array job $array (partitions 0..$((N - 1))) and finalize job $final"
for _ in $(seq 600); do
  [ -z "$(squeue -h -j "$array,$final" 2>/dev/null)" ] && break
  sleep 1
done
[ -z "$(squeue -h -j "$array,$final" 2>/dev/null)" ] || { logs; fail "the jobs did not end in 10 minutes"; }
end=$(date +%s.%N)
for j in $(seq 0 $((N - 1))); do
  st=$(scontrol show job "${array}_$j" 2>/dev/null | grep -o 'JobState=[A-Z]*' | head -1)
  ex=$(scontrol show job "${array}_$j" 2>/dev/null | grep -o ' ExitCode=[0-9:]*' | head -1)
  echo "array task $j: $st$ex"
  [ "$st" = JobState=COMPLETED ] || { logs; fail "array task $j: $st"; }
done
st=$(scontrol show job "$final" | grep -o 'JobState=[A-Z]*' | head -1)
echo "finalize job: $st"
[ "$st" = JobState=COMPLETED ] || { logs; fail "finalize: $st"; }
cat "$tmp"/work/smelter-finalize-*.out

# Byte for byte: every file of both outputs (README.md names the output directory, so it is compared renamed).
[ -d parts ] || { logs; fail "no output directory"; }
ls -a . | grep -q '\.parts\.part-' && fail "the staging directory is left"
diff <(cd one && ls) <(cd parts && ls) || fail "different files"
for f in one/*; do
  name=$(basename "$f")
  if [ "$name" = README.md ]; then
    cmp <(sed 's/^# one$/# parts/' "$f") parts/README.md || fail "README.md differs"
  else
    cmp "$f" "parts/$name" || fail "$name differs"
  fi
done
echo "OK: $N Slurm array tasks + finalize wrote $(ls parts | wc -l) files byte-identical to the one-process merge" \
  "($(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s from sbatch to the end)"
