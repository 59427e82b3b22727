#!/bin/bash
#SBATCH --job-name=fastgrad-array
#SBATCH --array=0-15                # one task per shard, numbered from 0: SHARDS tasks
#SBATCH --cpus-per-task=8
#SBATCH --time=01:00:00
#SBATCH --signal=B:TERM@60
#
# jid=$(sbatch --parsable array.sh) && sbatch --dependency=afterok:$jid merge.sh
# A task that exits 143 was stopped with its checkpoint written: submit that
# task again (sbatch --array=5 array.sh), then the merge after it.
SHARDS=${SHARDS:-16}                # must equal the number of tasks in --array

exec fastgrad compare --loc 2 --f square -n "${N:-1e13}" --seed 42 \
    --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" \
    --checkpoint "shard-$SLURM_ARRAY_TASK_ID.ckpt" --json "part-$SLURM_ARRAY_TASK_ID.json"
