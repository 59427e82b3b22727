#!/bin/bash
#SBATCH --job-name=fastgrad-merge
#SBATCH --cpus-per-task=1
#SBATCH --time=00:10:00
#
# After every task of array.sh: sbatch --dependency=afterok:<array job id> merge.sh
# The result is bit-identical to one process with the same seed.
exec fastgrad merge part-*.json --json result.json
