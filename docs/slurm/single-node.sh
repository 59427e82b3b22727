#!/bin/bash
#SBATCH --job-name=fastgrad
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=32          # fastgrad runs SLURM_CPUS_PER_TASK threads
#SBATCH --time=02:00:00
#SBATCH --signal=B:TERM@120         # SIGTERM to this script (B:) about 2 minutes before the limit
#
# Submit from the directory that keeps the run's files: sbatch single-node.sh
# Exit status 143: stopped by that SIGTERM, checkpoint written. Submit the same
# script again to continue from it; a finished run's checkpoint gives the result
# at once. N (the number of draws) may be set at submission: N=1e12 sbatch ...

# exec: fastgrad replaces the batch shell, so the signal sent to the shell reaches it.
exec fastgrad compare --loc 2 --f square -n "${N:-1e13}" --seed 42 \
    --checkpoint run-42.ckpt --checkpoint-every 300 --json run-42.json
