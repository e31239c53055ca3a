#!/usr/bin/env bash
# Multi-host data-parallel gnj run: one process per host, each driving all GPUs of its host,
# joined by jax.distributed (gnj.main --multihost). Every host reads its own shard of the data.
#
# Under SLURM (jax.distributed auto-detects the coordinator, process count and id):
#     sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 launch/slurm.sh \
#         --config=configs/gne/imagenet.py:resnet50_baseline --workdir=/scratch/runs/r50
#     # or inside an allocation: srun --ntasks-per-node=1 launch/slurm.sh --config=... --workdir=...
#
# Outside SLURM, start it once per host with the coordinator (process 0's host:port) given:
#     COORDINATOR_ADDRESS=host0:12345 NUM_PROCESSES=2 PROCESS_ID=0 launch/slurm.sh --config=... --workdir=...
#     COORDINATOR_ADDRESS=host0:12345 NUM_PROCESSES=2 PROCESS_ID=1 launch/slurm.sh --config=... --workdir=...
#
# The workdir must be on storage every host sees (checkpoints are written collectively).
# Extra arguments go to gnj.main unchanged (--mode=eval, --config.KEY=VALUE, ...).
#SBATCH --job-name=gnj
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
set -euo pipefail

PYTHON="${PYTHON:-python}"
if [[ $# -eq 0 ]]; then
  echo "usage: launch/slurm.sh --config=<file>:<variant> --workdir=<shared dir> [gnj.main flags]" >&2
  exit 2
fi

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
  # One task per node: when sbatch runs this script (not yet inside srun), re-launch it with srun.
  if [[ -z "${SLURM_STEP_ID:-}" || "${SLURM_STEP_ID}" == "batch" || -z "${SLURM_PROCID:-}" ]]; then
    exec srun --ntasks-per-node=1 "$0" "$@"
  fi
  exec "$PYTHON" -m gnj.main --multihost "$@"
fi

if [[ -z "${COORDINATOR_ADDRESS:-}" ]]; then
  echo "launch/slurm.sh: not under SLURM and COORDINATOR_ADDRESS is not set." >&2
  echo "  Set COORDINATOR_ADDRESS=<process 0 host>:<port>, NUM_PROCESSES and PROCESS_ID on every" >&2
  echo "  host (or submit with sbatch / srun, where jax.distributed finds them itself)." >&2
  exit 2
fi
for var in NUM_PROCESSES PROCESS_ID; do
  if [[ -z "${!var:-}" ]]; then
    echo "launch/slurm.sh: COORDINATOR_ADDRESS is set but $var is not; set both NUM_PROCESSES" >&2
    echo "  and PROCESS_ID (0 on the coordinator's host)." >&2
    exit 2
  fi
done
exec "$PYTHON" -m gnj.main --multihost --coordinator_address="$COORDINATOR_ADDRESS" \
  --num_processes="$NUM_PROCESSES" --process_id="$PROCESS_ID" "$@"
