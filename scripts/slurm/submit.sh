#!/bin/bash
# Submits a partitioned Smelter merge to Slurm: an array of N partitions and the finalize job after it.
#
#   scripts/slurm/submit.sh N CONFIG OUT [smelter merge options...]
#
# Extra sbatch options (partition, account, GPUs, time) go in $SBATCH_ARGS, e.g.
#   SBATCH_ARGS="--partition=gpu --gres=gpu:1 --time=2:00:00" scripts/slurm/submit.sh 8 merge.yml /shared/merged --device cuda
# Prints the two job IDs (array, finalize). SMELTER_STATS_FIRST=1 runs partition 0 first and the others after it, so
# the model-wide statistics of trim_scope: model (or Fisher norms) are computed once (see docs/SCALING.md). SMELTER_SUBCOMMAND=sweep submits a sweep's partitions instead:
#   SMELTER_SUBCOMMAND=sweep scripts/slurm/submit.sh 6 ties.yml /shared/sweep --grid density=0.2:0.7:0.1 --grid lambda=0.5,1
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 N CONFIG OUT [smelter merge options...]" >&2
  exit 2
fi
N=$1 CONFIG=$2 OUT=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
after=afterany
if [ "${SMELTER_STATS_FIRST:-0}" = 1 ] && [ "$N" -gt 1 ]; then
  # Partition 0 first: it computes the model-wide statistics (trim_scope: model thresholds, Fisher norms) once and
  # leaves them in the staging directory; the others read them instead of every input.
  # shellcheck disable=SC2086
  first=$(sbatch --parsable ${SBATCH_ARGS:-} --array=0 "$here/merge-array.sbatch" "$N" "$CONFIG" "$OUT" "$@")
  first=${first%%;*}
  # shellcheck disable=SC2086
  array=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency=afterany:"$first" --array=1-$((N - 1)) \
    "$here/merge-array.sbatch" "$N" "$CONFIG" "$OUT" "$@")
  array=${array%%;*}
  after=afterany:$first,afterany
else
  # shellcheck disable=SC2086
  array=$(sbatch --parsable ${SBATCH_ARGS:-} --array=0-$((N - 1)) "$here/merge-array.sbatch" "$N" "$CONFIG" "$OUT" "$@")
  array=${array%%;*}
fi
# shellcheck disable=SC2086
final=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency="$after:$array" "$here/finalize.sbatch" "$CONFIG" "$OUT" "$@")
final=${final%%;*}
echo "$array $final"
