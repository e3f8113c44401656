"""Data-parallel training on ``torch.distributed``, launched by torchrun.

``bitsnn train --nproc N`` starts N processes through torch's elastic launcher (what ``torchrun
--standalone`` runs); on several machines each one runs ``torchrun ... -m bitsnn train ...`` with
torchrun's rendezvous options (docs/usage.md). A process finds itself distributed by the
``WORLD_SIZE`` torchrun sets.

What makes N processes train the model one process trains (the test checks it after 50 steps):

- every process draws the same global batch (one seeded permutation, the same random shifts)
  and takes its contiguous share of the rows;
- BatchNorm normalises with the global batch's statistics (:class:`GlobalBatchNorm`: the
  per-channel sums of all processes, reduced with autograd, so the backward pass is the global
  batch's too), where torch's SyncBatchNorm takes only GPUs;
- each process's loss is its rows' share of the global mean, and one all-reduce per step sums
  the gradients (with the loss, the correct count and the firing rates riding along), so every
  process takes the same Adam step from the same sums.

Gloo carries CPU tensors, NCCL CUDA ones. Only rank 0 logs and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from bitsnn import BitsnnError

__all__ = ["Group", "current", "under_torchrun", "start", "stop", "GlobalBatchNorm", "global_batchnorm",
           "local_batchnorm", "agree"]

#: how long a collective waits for the other processes before the run fails
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int
    world: int
    device: torch.device

    @property
    def backend(self) -> str:
        return dist.get_backend()

    def part(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (shares differ by at most one row)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes: every process gets every process's tensor (one
        all-gather) and sums them in rank order, so all get the same bits. Gloo's all-reduce of a
        small tensor took 0.9 to 1.4 ms on the 2-core machine, its all-gather 0.3 to 0.5 ms."""
        return _all_sum(t, self.device)


_GROUP: Group | None = None


def under_torchrun() -> bool:
    """Whether torchrun (or the elastic launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def current() -> Group | None:
    """The process group this process trains in (None: it trains alone)."""
    return _GROUP


def start(device: torch.device) -> Group | None:
    """Join the training processes torchrun started (None when there are none): gloo on the CPU,
    NCCL on CUDA devices, each process on its own GPU (``LOCAL_RANK``)."""
    global _GROUP
    if not under_torchrun():
        return None
    if _GROUP is not None:
        return _GROUP
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise BitsnnError(f"cannot join the training processes ({backend}): {(str(e).splitlines() or ['?'])[0]}") from None
    _GROUP = Group(dist.get_rank(), dist.get_world_size(), device)
    return _GROUP


def stop() -> None:
    global _GROUP
    if _GROUP is not None:
        dist.destroy_process_group()
        _GROUP = None


def agree(group: Group | None, problem: str | None) -> None:
    """Every process learns whether any failed its checks (a process that raised alone would
    leave the others waiting in their first collective): each raises, the failed ones with their
    own problem."""
    if group is None:
        if problem:
            raise BitsnnError(problem)
        return
    failed = group.all_sum(torch.tensor([1.0 if problem else 0.0], dtype=torch.float64))
    if problem:
        raise BitsnnError(problem)
    if float(failed[0]):
        raise BitsnnError("another training process failed (its error is above)")


def _all_gather(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Every process's 1-D ``t``, one row per rank (on ``t``'s device)."""
    src = t.detach().to(device).contiguous().reshape(-1)
    out = torch.empty(dist.get_world_size() * src.numel(), dtype=src.dtype, device=device)
    dist.all_gather_single(out, src)
    return out.view(-1, src.numel()).to(t.device)


def _all_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return _all_gather(t, device).sum(0).view(t.shape)


class _GlobalBN(torch.autograd.Function):
    """Batch normalisation over the global batch: the forward pass gathers each process's
    per-channel sum, sum of squares and count (float64 from here on, combined in rank order, so
    every process gets the same bits); the backward pass sums BatchNorm's two per-channel
    reductions over the processes and returns this process's share of the weight and bias
    gradients (the gradient all-reduce adds the shares). Torch's SyncBatchNorm kernels run only on
    GPUs; these are torch's CPU BatchNorm kernels given the global statistics."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        dims = [0] + list(range(2, x.dim()))
        c = x.shape[1]
        count = torch.full((1,), x.numel() // c, dtype=torch.float64, device=x.device)
        local = torch.cat([x.sum(dims).to(torch.float64), (x * x).sum(dims).to(torch.float64), count])
        s = _all_gather(local, group.device).sum(0)
        n = s[-1]
        mean = s[:c] / n
        var = (s[c:2 * c] / n - mean * mean).clamp_min(0)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        y = torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        invstd = torch.rsqrt(var + eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.n, ctx.eps, ctx.group = float(n), eps, group
        ctx.mark_non_differentiable(mean, var, n)
        return y, mean, var, n

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dn):
        x, weight, mean, invstd = ctx.saved_tensors
        # this process's sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd
        _, g_w, g_b = torch.ops.aten.native_batch_norm_backward(dy.contiguous(), x, weight, None, None, mean, invstd,
                                                                True, ctx.eps, [False, True, True])
        c = x.shape[1]
        total = ctx.group.all_sum(torch.cat([g_b, g_w]))
        mean_dy, mean_dy_xhat = total[:c] / ctx.n, total[c:] / ctx.n
        w = weight if weight is not None else torch.ones_like(invstd)
        shape = [1, -1] + [1] * (x.dim() - 2)
        # dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)), as a x + b x + c per channel
        k = w * invstd
        cx = -k * invstd * mean_dy_xhat
        c0 = k * (invstd * mean_dy_xhat * mean - mean_dy)
        dx = torch.addcmul(torch.addcmul(c0.view(shape), x, cx.view(shape)), dy, k.view(shape))
        return dx, (g_w if weight is not None else None), (g_b if weight is not None else None), None, None


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all processes (1-D and 2-D inputs). Its parameters and
    buffers are the module's it replaces (the same state_dict), and it updates the running
    statistics as torch's BatchNorm does (unbiased variance, ``momentum``). In eval mode, or
    with no process group, it is torch's BatchNorm."""

    def _check_input_dim(self, x):
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a 2-D, 3-D or 4-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = current()
        if not (self.training and group is not None):
            return super().forward(x)
        y, mean, var, n = _GlobalBN.apply(x, self.weight, self.bias, self.eps, group)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(n)  # values per channel in the global batch
                unbiased = var * (n / (n - 1)) if n > 1 else var
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y


def _swap(model: nn.Module, make) -> None:
    for name, child in list(model.named_children()):
        new = make(child)
        if new is not None:
            setattr(model, name, new)
        else:
            _swap(child, make)


def _copy(bn, cls):
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    like = next(bn.parameters(), bn.running_mean)
    new.to(device=like.device, dtype=like.dtype).load_state_dict(bn.state_dict())
    return new


def global_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d of ``model`` with a :class:`GlobalBatchNorm` (in place)."""
    def to_global(m):
        if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return None
        g = _copy(m, GlobalBatchNorm)
        g.local_class = type(m)
        return g
    _swap(model, to_global)
    return model


def local_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`global_batchnorm`: torch's BatchNorm it replaced, in the same state."""
    _swap(model, lambda m: _copy(m, m.local_class) if isinstance(m, GlobalBatchNorm) else None)
    return model


def sync_state(model: nn.Module, group: Group | None) -> None:
    """Rank 0's parameters and buffers into every process (the same seed built the same model;
    this makes sure)."""
    if group is None:
        return
    for t in model.state_dict().values():
        if t.device.type == group.device.type:
            dist.broadcast(t, 0)
        else:
            u = t.to(group.device)
            dist.broadcast(u, 0)
            t.copy_(u.to(t.device))


def sum_gradients(params: list, extra: torch.Tensor, group: Group) -> torch.Tensor:
    """Sum every process's gradients of ``params`` (those some process has; one all-reduce, the
    float32 vector ``extra`` riding along) and return ``extra`` summed."""
    have = [p.grad is not None for p in params]
    flat = torch.cat([p.grad.reshape(-1).to(extra.dtype) if h else torch.zeros(p.numel(), dtype=extra.dtype,
                                                                              device=extra.device)
                      for p, h in zip(params, have)] + [extra])
    flat = group.all_sum(flat)
    at = 0
    for p, h in zip(params, have):
        g = flat[at:at + p.numel()].view_as(p).to(p.dtype)
        at += p.numel()
        if h:
            p.grad.copy_(g)
        elif bool(g.any()):
            p.grad = g.clone()
    return flat[at:]


def launch(nproc: int, argv: list[str]) -> None:
    """Run ``python -m bitsnn ARGV`` in ``nproc`` processes on this machine through torch's
    elastic launcher (torchrun --standalone: a c10d rendezvous on a free local port)."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5, start_method="spawn")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # each process sets its own thread count
    try:
        elastic_launch(config, sys.executable)("-m", "bitsnn", *argv)
    except ChildFailedError as e:
        codes = sorted({f.exitcode for f in e.failures.values()})
        raise BitsnnError(f"{len(e.failures)} of {nproc} training processes failed (exit code "
                          + ", ".join(map(str, codes)) + "); nothing was written") from None
    except SignalException:
        raise KeyboardInterrupt from None
