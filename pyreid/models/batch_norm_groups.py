"""BatchNorm over G equal slices of a batch ("ghost" batch norm): one GPU, multi-GPU statistics.

The published unsupervised runs (Cluster-Contrast, SpCL, ISE) trained on 4 GPUs
with ``nn.DataParallel``: each GPU's BatchNorm layers normalised their own 64
images of the 256-image batch, and the running statistics came from the first
GPU's slice. Their users report that one GPU with the whole batch in one
BatchNorm trains far worse (Cluster-Contrast issue 16: 59.1 against 82.6 mAP),
which the maintainers put down to these statistics.

``convert_bn_groups(model, G)`` makes every BatchNorm layer of a model compute
its training-mode statistics over G equal, contiguous slices of the batch,
exactly as G processes (or GPUs) holding one slice each would, with the
running statistics updated from the first slice only (the DataParallel /
DDP-with-broadcast-buffers behaviour). Evaluation mode is unchanged. The
layers keep their parameter and buffer names, so checkpoints and weight
files load either way.

Example:
    >>> model = convert_bn_groups(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)), 4)
    >>> model(torch.randn(16, 3, 8, 8)).shape
    torch.Size([16, 8, 6, 6])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupedBatchNorm1d", "GroupedBatchNorm2d", "convert_bn_groups"]


class _Grouped:
    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        if not self.training or self.groups == 1:
            return super().forward(x)
        n = x.shape[0]
        if n % self.groups:
            raise ValueError(f"bn_groups: the batch of {n} does not split into {self.groups} equal slices "
                             "(batch_size per process must be a multiple of bn_groups)")
        self._check_input_dim(x)
        if self.momentum is None:  # cumulative moving average, as nn.BatchNorm
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            self.num_batches_tracked.add_(1)
            factor = self.momentum
        slices = x.chunk(self.groups)
        # The first slice updates the running statistics; the others only normalise.
        out = [F.batch_norm(slices[0], self.running_mean, self.running_var, self.weight, self.bias, True, factor,
                            self.eps)]
        out += [F.batch_norm(s, None, None, self.weight, self.bias, True, 0.0, self.eps) for s in slices[1:]]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", groups={self.groups}"


class GroupedBatchNorm1d(_Grouped, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with training statistics over ``groups`` slices of the batch."""


class GroupedBatchNorm2d(_Grouped, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with training statistics over ``groups`` slices of the batch."""


def convert_bn_groups(module: nn.Module, groups: int) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` (in place) by its grouped form; returns ``module``.

    Parameters, buffers and their ``requires_grad`` flags (the BN neck's frozen
    shift) carry over.
    """
    if groups < 1:
        raise ValueError(f"bn_groups must be >= 1, got {groups}")
    if groups == 1:
        return module
    for name, child in module.named_children():
        grouped = None
        if type(child) is nn.BatchNorm2d:
            grouped = GroupedBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
        elif type(child) is nn.BatchNorm1d:
            grouped = GroupedBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats)
        if grouped is not None:
            if not child.track_running_stats:
                raise ValueError(f"bn_groups: {name} keeps no running statistics; grouped BN needs them")
            # The child's device and dtype first, so its values load without a round trip through float32.
            reference = child.weight if child.affine else child.running_mean
            grouped.to(device=reference.device, dtype=reference.dtype)
            grouped.load_state_dict(child.state_dict())
            if child.affine:
                grouped.weight.requires_grad_(child.weight.requires_grad)
                grouped.bias.requires_grad_(child.bias.requires_grad)
            grouped.groups = groups
            setattr(module, name, grouped)
        else:
            convert_bn_groups(child, groups)
    return module
