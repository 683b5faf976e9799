#!/bin/bash
# A Ray cluster inside a Slurm allocation, then a zcp cache build and campaign on it.
#   sbatch docs/cluster/slurm.sh
# One Ray node per Slurm node; the first node is the head and runs the zcp driver. Every node uses
# the same Python environment (same Python and Ray); zcp's own code is shipped to the workers, so the
# project need only be checked out where this script runs.
#SBATCH --job-name=zcp
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=32G
#SBATCH --time=04:00:00
##SBATCH --gpus-per-node=1          # uncomment on GPU partitions, then pass --gpus-per-task 0.25
set -euo pipefail

source "$HOME/zcp/.venv/bin/activate"    # your environment: dependencies + this project
cd "$HOME/zcp"

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head=${nodes[0]}
head_ip=$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')
port=6379
store=$((4 * 1024 * 1024 * 1024))         # object store per node: the largest cache, with headroom

# the head offers no CPUs to Ray: the zcp driver (and its GP engine) runs there
srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port=$port --num-cpus=0 \
  --object-store-memory=$store --include-dashboard=false --block &
sleep 20
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$head_ip:$port" --num-cpus="$SLURM_CPUS_PER_TASK" \
    --object-store-memory=$store --block &
done
sleep 20

# the driver runs on the head node (this batch step runs there): --address joins the cluster,
# the driver's own address is derived from the route to the head (or: --node-ip-address "$head_ip")
zcp bench sample --space tss --split search --kind random --n 1000 --seed 0 --dataset cifar10 --out search1000.json
zcp cache build --space tss --dataset cifar10 --sample search1000.json --out runs/caches/search1000 \
  --address "$head_ip:$port" --workers $(( (SLURM_NNODES - 1) * SLURM_CPUS_PER_TASK ))
zcp evolve experiments/configs/quickstart.toml --out runs/slurm-quickstart \
  --set "parallel.address=\"$head_ip:$port\"" --set parallel.workers=16

ray stop   # on the head; the workers' `ray start --block` steps end with the allocation
