#!/bin/bash
# jobs/reprocess-archive.toml as a Slurm job array: array task i runs shard i. jerex reads the
# shard from SLURM_ARRAY_TASK_ID, _MIN, _STEP and _COUNT itself, so the array range is the only
# place the shard count is set. Submit from the repository root:
#
#   sbatch jobs/slurm-reprocess.sh
#   ARCHIVE=/shared/archive KB=/shared/kb sbatch --array=0-31 jobs/slurm-reprocess.sh
#
# jerex itself: `jerex` on the PATH, or JEREX=/shared/jerex-0.1.0-x86_64-linux/bin/jerex (the
# release archive unpacked on the shared file system: no container needed), or the container
# image through Apptainer, JEREX_IMAGE=/shared/jerex.sif (made from the Dockerfile's image:
# `apptainer build jerex.sif docker-daemon://jerex:0.1.0`; APPTAINER_BIND makes the shared
# paths visible inside, APPTAINER_NV=1 the GPUs).
#
# All tasks write into one output directory on the shared file system; a task that fails can be
# run again alone and redoes only its unfinished units.
#SBATCH --job-name=jerex-reprocess
#SBATCH --array=0-7
#SBATCH --cpus-per-task=4
#SBATCH --mem=6G
#SBATCH --time=12:00:00
#SBATCH --output=jerex-reprocess-%A_%a.log
#SBATCH --requeue

set -uo pipefail

JOB_FILE=${JOB_FILE:-jobs/reprocess-archive.toml}
MAX_REQUEUES=${MAX_REQUEUES:-3}
args=(run "$JOB_FILE" --log-format json)
if [ -n "${ARCHIVE:-}" ]; then args+=(--input "$ARCHIVE"); fi
if [ -n "${KB:-}" ]; then args+=(--output "$KB"); fi

if [ -n "${JEREX_IMAGE:-}" ]; then
  apptainer exec "$JEREX_IMAGE" jerex "${args[@]}"
else
  "${JEREX:-jerex}" "${args[@]}"
fi
code=$?
case $code in
  # 3: finished, but some documents were rejected; they are rows of the documents table.
  0 | 3) exit 0 ;;
  # Retryable (I/O, device, out of memory): requeue a few times; finished units are kept.
  75)
    if [ -n "${SLURM_JOB_ID:-}" ] && [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
      echo "jerex: retryable failure, requeueing ${SLURM_JOB_ID}" >&2
      scontrol requeue "$SLURM_JOB_ID"
    fi
    exit 75
    ;;
  # 65 bad input (strict mode), 78 bad configuration: retrying cannot help.
  *) exit "$code" ;;
esac
