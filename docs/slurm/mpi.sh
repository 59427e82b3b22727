#!/bin/bash
#SBATCH --job-name=fastgrad-mpi
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=2         # 2 ranks per node ...
#SBATCH --cpus-per-task=16          # ... of 16 threads each
#SBATCH --time=02:00:00
#SBATCH --signal=B:TERM@120         # to mpiexec (B:), which passes it on to every rank
#
# Exit status 143: every rank stopped after the same batch, checkpoint written;
# submit again, with the same number of ranks, to continue.
export NUMBA_NUM_THREADS=$SLURM_CPUS_PER_TASK

exec mpiexec -n "$SLURM_NTASKS" fastgrad compare --loc 2 --f square -n "${N:-1e14}" --seed 42 --mpi \
    --checkpoint mpi-42.ckpt --checkpoint-every 600 --json mpi-42.json
