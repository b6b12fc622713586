"""PyTorch: data parallel over `torch.distributed`, one process per replica (gloo on CPU, nccl on GPU).

Released Keras has no distribution API on this backend, and `DistributedDataParallel` wraps a module's
forward call, which Keras' trainer owns. So the glue gives Keras' `fit` DDP's semantics directly:
rank 0's weights are broadcast once, each rank feeds its slice of every global batch, and before every
optimizer update the gradients are averaged over the ranks with one flat all-reduce (per dtype), so
gradient clipping and AdamW see exactly the single-device gradient of the global batch. Ranks come from
torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), which
`kerasboost run --nproc N` sets too.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from kerasboost.distribute.engine import Distributed
from kerasboost.errors import InputError
from kerasboost.recipe import DistributionConfig


class ProcessGroupDistribution(Distributed):
    name = "data parallel (torch.distributed, gradients all-reduced every step)"

    def __init__(self, rank: int, world: int, details: str, device: str):
        super().__init__(world, rank, world, details)
        self.device = device  # where collectives' own tensors live: nccl takes CUDA tensors only

    def data_shard(self) -> tuple[int, int]:
        return self.process_id, self.num_processes

    def prepare(self, model) -> None:
        if self.num_processes == 1:
            return
        with torch.no_grad():
            for variable in model.variables:
                dist.broadcast(variable.value.data, src=0)
        optimizer = model.optimizer
        apply = optimizer.apply
        world = self.num_processes

        def apply_averaged(grads, trainable_variables=None):
            _average_in_place(grads, world)
            return apply(grads, trainable_variables)

        optimizer.apply = apply_averaged

    def mean(self, value: float) -> float:
        if self.num_processes == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return float(total.item()) / self.num_processes

    def check_replicas(self, model) -> str:
        if self.num_processes == 1:
            return ""
        local = torch.stack(
            [
                variable.value.detach().double().sum()
                for variable in model.variables
                if variable.value.is_floating_point()
            ]
        )
        gathered = [torch.empty_like(local) for _ in range(self.num_processes)]
        dist.all_gather(gathered, local.contiguous())
        if any(not torch.equal(other, gathered[0]) for other in gathered[1:]):
            raise RuntimeError(
                f"replicas diverged: the {self.num_processes} processes hold different weights after training"
            )
        return f"replicas: weights identical on all {self.num_processes} processes"

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def setup(config: DistributionConfig) -> ProcessGroupDistribution:
    world = config.num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    rank = config.process_id if config.process_id is not None else int(os.environ.get("RANK", "0"))
    if config.coordinator:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = config.coordinator.rsplit(":", 1)
    if world > 1 and not os.environ.get("MASTER_ADDR"):
        raise InputError(
            "distribution.coordinator: torch needs the address of rank 0 (host:port), "
            "or MASTER_ADDR/MASTER_PORT from torchrun"
        )
    if config.mesh.batch and config.mesh.batch != world:
        raise InputError(
            f"distribution.mesh.batch: {config.mesh.batch} replicas asked, "
            f"but {world} torch processes run (one replica each)"
        )
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % torch.cuda.device_count())))
    backend = "nccl" if cuda else "gloo"
    if world > 1:
        dist.init_process_group(backend, rank=rank, world_size=world)
    details = (
        f"{backend} on {'cuda' if cuda else 'cpu'}"
        if world > 1
        else "1 process (start more with --nproc N or torchrun)"
    )
    return ProcessGroupDistribution(rank, world, details, "cuda" if cuda else "cpu")


def _average_in_place(grads, world: int) -> None:
    """Averages the gradients over the ranks: one flat buffer per dtype, one all-reduce each."""
    by_dtype: dict = {}
    for grad in grads:
        if grad is not None:
            by_dtype.setdefault(grad.dtype, []).append(grad)
    for group in by_dtype.values():
        flat = torch.cat([grad.reshape(-1) for grad in group])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for grad in group:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
