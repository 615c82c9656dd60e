"""The one training loop every algorithm runs through.

:class:`Engine` builds the run (its data sets, the algorithm and the
algorithm's models, the BatchNorm batch and the precision the config asks for,
both logged), then loops: for each epoch the algorithm's loader, and for each
batch the algorithm's named losses, checked
for NaN/Inf on every process before the algorithm back-propagates them and the
optimisers and schedules step. Everything else is a hook
(:mod:`pyreid.training.hooks`): evaluation at epoch 0 (before any training),
every ``eval_step`` epochs and after the last one, with ``best.pth``;
``checkpoint.pth`` (atomic: every model, optimiser and schedule, the
algorithm's and the hooks' state, RNG states, history) and ``metrics.json``
after every epoch; ``curves.png``; the final ``cmc.png``, ``ranked_lists.png``
and ``embedding.png``; the rank-consistency check of ``check_ranks``.

* A non-finite loss stops the run before backward (so no weight or memory
  takes the bad step) with the epoch and iteration; the last checkpoint stays.
* ``resume`` continues from ``checkpoint.pth``; on CPU with a fixed seed the
  result equals the uninterrupted run's (the loader's draws and augmentation
  depend only on the seed and the epoch, and the RNG states are restored).

Only the main process (rank 0) writes files and logs; there is no global state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import random
import sys
import time
from typing import Any, Dict, List, Optional, Type

import numpy as np
import torch

import pyreid
from pyreid.data.datasets import build_dataset
from pyreid.distributed import DistInfo, all_reduce_sum, broadcast, current
from pyreid.evaluation.protocol import SCORE_KEYS, SplitResult, evaluate_split
from pyreid.training import checkpoint as ckpt_io
from pyreid.training.algorithm import Algorithm, StepInfo
from pyreid.training.config import DATA_FLAGS, ConfigError, TrainConfig
from pyreid.training.hooks import (
    CheckpointHook,
    CurvesHook,
    EvaluationHook,
    FinalPlotsHook,
    Hook,
    RankCheckHook,
    TensorBoardHook,
    write_json_atomic,
)

__all__ = ["Engine", "NonFiniteLossError", "RunExistsError", "resolve_device", "is_timing"]

CHECKPOINT = "checkpoint.pth"
BEST = "best.pth"
METRICS = "metrics.json"
LOG = "train.log"


def is_timing(key: str) -> bool:
    """Whether a history key measures time (the rest is equal between a resumed and an uninterrupted run)."""
    return key.endswith("_seconds") or key in ("images_per_second", "outside_training_share")


class NonFiniteLossError(RuntimeError):
    """A loss was NaN or infinite; the step was not taken."""


class RunExistsError(FileExistsError):
    """The output folder already holds a run and ``resume`` was not asked for."""


def resolve_device(name: str, dist: Optional[DistInfo] = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked.

    Under torchrun a CUDA device without an index becomes ``cuda:LOCAL_RANK``
    (one GPU per process)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"'device': {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"'device' is {name} but torch sees no CUDA device; use --device cpu or auto")
    if device.type == "cuda" and device.index is None and dist is not None and dist.distributed:
        device = torch.device("cuda", dist.local_rank)
    return device


def _skipped(batch: Any) -> List[Any]:
    """The ``(path, reason)`` of the images a loader left out of ``batch`` (a dict of named batches: all)."""
    if isinstance(batch, dict):
        return [bad for part in batch.values() for bad in _skipped(part)]
    return list(getattr(batch, "skipped", ()))


class _TqdmHandler(logging.StreamHandler):
    """Console lines that do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class Engine:
    """Trains ``algorithm_cls`` under ``config`` / ``options``; :meth:`run` does it all.

    Example:
        >>> from pyreid.algorithms import Supervised
        >>> config = TrainConfig(dataset="synthetic", data_root="data/synthetic", arch="resnet18",
        ...                      height=128, width=64, epochs=2, out="runs/demo")      # doctest: +SKIP
        >>> Engine(config, Supervised.Options(), Supervised).run()["final"]["mAP"]      # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, options: Any, algorithm_cls: Type[Algorithm],
                 dist: Optional[DistInfo] = None):
        config.validate()
        if hasattr(options, "validate"):
            options.validate()
        unread = [f"--{key.replace('_', '-')}" for role, keys in DATA_FLAGS.items()
                  if role != "train" and role not in algorithm_cls.datasets for key in keys
                  if getattr(config, key) is not None]
        if unread:
            raise ConfigError(f"{algorithm_cls.name or algorithm_cls.__name__} reads {', '.join(algorithm_cls.datasets)} "
                              f"(--dataset/--data-root), not {' '.join(unread)}: those are for an algorithm of "
                              "two data sets (uda)")
        self.config = config
        self.options = options
        self.algorithm_cls = algorithm_cls
        self.dist = dist or current()
        self.out = config.out
        self.log = logging.getLogger("pyreid.train")
        self.history: List[Dict[str, Any]] = []
        self.evaluation = EvaluationHook()
        self.hooks: List[Hook] = []
        self.stop_reason: Optional[str] = None  # set when the algorithm ends training early
        # Images that could not be read and were left out, by split ("train", "query", "gallery", and
        # "source_query", ... for a second evaluated data set): {path: reason}; in metrics.json and the checkpoint.
        self.bad_images: Dict[str, Dict[str, str]] = {}

    @property
    def best(self) -> Dict[str, Any]:
        """``{"mAP", "epoch"}`` of the best evaluation so far."""
        return self.evaluation.best

    @property
    def models(self):
        return self.algorithm.models

    @property
    def network(self) -> torch.nn.Module:
        """The evaluated model."""
        return self.algorithm.network

    # ------------------------------------------------------------------ files
    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def _check_out_folder(self) -> None:
        # best.pth alone is a run's result too (its checkpoint deleted to save space): never overwrite it.
        existing = [n for n in (CHECKPOINT, METRICS, BEST) if os.path.exists(self.path(n))]
        if self.config.resume:
            if not os.path.exists(self.path(CHECKPOINT)):
                raise ckpt_io.CheckpointError(f"--resume: {self.path(CHECKPOINT)} does not exist: nothing to resume "
                                              f"in {self.out}")
        elif existing:
            raise RunExistsError(f"{self.out} already holds a run ({', '.join(existing)}): pass --resume to "
                                 "continue it, or choose another --out")

    def _config_record(self) -> Dict[str, Any]:
        record = dataclasses.asdict(self.config)
        record["options"] = dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}
        return record

    def write_metrics(self, status: str) -> None:
        if self.dist.is_main:
            write_json_atomic({"config": self._config_record(), "history": self.history, "status": status,
                               "bad_images": {split: sorted(paths) for split, paths in self.bad_images.items()}},
                              self.path(METRICS))

    def note_bad_images(self, split: str, failed: List[Any]) -> None:
        """Record the ``(path, reason)`` images of ``split`` left out; each is logged the first time."""
        seen = self.bad_images.setdefault(split, {})
        new = [(path, why) for path, why in failed if path not in seen]
        seen.update(new)
        if new:
            self.log.warning("skipped %d %s image(s) that cannot be read (on_bad_image: skip): %s", len(new), split,
                             "; ".join(f"{p} ({why})" for p, why in new[:20]) + (" ..." if len(new) > 20 else ""))

    def save_checkpoint(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "pyreid_version": pyreid.__version__,
            "algorithm": self.algorithm_cls.name,
            "epoch": epoch,
            **self.models.state_dict(),
            "evaluated_model": self.algorithm.evaluated_model,
            "algorithm_state": self.algorithm.state_dict(),
            "hooks": {hook.name: hook.state_dict() for hook in self.hooks if hook.state_dict()},
            "rng": ckpt_io.rng_state(),
            "config": self._config_record(),
            "history": self.history,
            "bad_images": self.bad_images,
        }
        ckpt_io.save_atomic(state, self.path(CHECKPOINT))

    def save_best(self, epoch: int, scores: Dict[str, float]) -> None:
        """``best.pth``: the evaluated model alone (a model file, not a training checkpoint)."""
        if not self.dist.is_main:
            return
        ckpt_io.save_atomic({
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "pyreid_version": pyreid.__version__,
            "algorithm": self.algorithm_cls.name, "epoch": epoch, "model": self.network.state_dict(),
            "model_args": self.network.build_args, "config": self._config_record(), "scores": scores,
        }, self.path(BEST))

    @contextlib.contextmanager
    def _logging(self):
        """Console + train.log handlers on the 'pyreid' logger for the run (main process only)."""
        logger = logging.getLogger("pyreid")
        saved = (logger.level, logger.propagate)
        handlers: List[logging.Handler] = []
        if self.dist.is_main:
            os.makedirs(self.out, exist_ok=True)
            formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
            file_handler = logging.FileHandler(self.path(LOG), mode="a")
            console = _TqdmHandler() if self.config.progress else logging.StreamHandler(sys.stderr)
            for handler in (file_handler, console):
                handler.setFormatter(formatter)
                handler.setLevel(logging.INFO)
                logger.addHandler(handler)
                handlers.append(handler)
        # Other processes stay quiet but for errors (every process's failure must be seen).
        logger.setLevel(logging.INFO if self.dist.is_main else logging.ERROR)
        logger.propagate = False
        try:
            yield
        finally:
            for handler in handlers:
                logger.removeHandler(handler)
                handler.close()
            logger.setLevel(saved[0])
            logger.propagate = saved[1]

    # ------------------------------------------------------------ set-up
    def _build(self) -> None:
        c = self.config
        self.device = resolve_device(c.device, self.dist)
        datasets = {name: build_dataset(*c.data_set(name)) for name in self.algorithm_cls.datasets}
        first = datasets[self.algorithm_cls.datasets[0]]
        self.iters_per_epoch = c.iters or max(1, len(first.train) // c.batch_size)
        self.total_steps = c.epochs * self.iters_per_epoch
        torch.manual_seed(c.seed)
        random.seed(c.seed)
        np.random.seed(c.seed)
        # On resume the weights come from the checkpoint: do not fetch or read the starting weights again.
        algo_config = dataclasses.replace(c, weights=None, pretrained=None) if c.resume else c
        self.algorithm = self.algorithm_cls(algo_config, self.options, datasets, self.device, self.iters_per_epoch,
                                            self.dist)
        self.algorithm.build_models()  # build_model logs what a --weights file did not fit
        if c.sync_bn and not self.dist.distributed:
            self.log.warning("sync_bn has no effect in a single process: BatchNorm already sees the whole batch")
        self.amp = c.amp == "bf16" and self.device.type == "cuda"
        hooks: List[Hook] = [RankCheckHook()] if c.check_ranks else []
        hooks += [self.evaluation, CheckpointHook()]
        if c.plots:
            hooks += [CurvesHook(), FinalPlotsHook(self.evaluation)]
        if c.tensorboard:
            hooks.append(TensorBoardHook())
        self.hooks = hooks + list(self.algorithm.hooks())

    def _describe_numerics(self) -> None:
        """Log the BatchNorm batch and the precision: both change results, and both follow the config."""
        c, world = self.config, self.dist.world_size
        per_process = c.batch_size // world
        groups = c.bn_groups_per_process(world)
        if c.sync_bn and self.dist.distributed:
            self.log.info("BatchNorm: statistics over all %d processes' %d images (sync_bn)", world, c.batch_size)
        else:
            origin = f"bn_batch {c.bn_batch}" if c.bn_batch else f"bn_groups {c.bn_groups}"
            self.log.info("BatchNorm: statistics over %d images = %d slice(s) of each process's %d (%s, batch_size "
                          "%d over %d process(es))", per_process // groups, groups, per_process, origin,
                          c.batch_size, world)
        if self.device.type != "cuda":
            self.log.info("precision: float32 (CPU)")
        elif self.amp:
            self.log.info("precision: bfloat16 autocast (amp bf16)")
        else:
            self.log.info("precision: float32 (amp off), %s", "TF32 matmuls and convolutions allowed" if c.tf32
                          else "TF32 off (strict float32)")

    @contextlib.contextmanager
    def _precision(self):
        """TF32 as ``tf32`` asks on a float32 CUDA run, restored afterwards (torch keeps it process-wide)."""
        if self.device.type != "cuda" or self.amp:
            yield
            return
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.config.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def _resume(self) -> int:
        path = self.path(CHECKPOINT)
        if self.dist.is_main:
            for stale in ckpt_io.remove_stale_temporaries(self.out):
                self.log.info("removed %s, left by a run killed while writing it", stale)
        state = ckpt_io.load_checkpoint(path)
        if state.get("algorithm") != self.algorithm_cls.name:
            raise ckpt_io.CheckpointError(f"{path} was written by algorithm '{state.get('algorithm')}', not "
                                          f"'{self.algorithm_cls.name}'")
        for key in ("models", "optimizers", "schedulers", "rng", "history", "epoch"):
            if key not in state:
                raise ckpt_io.CheckpointError(f"{path} has no '{key}': it is a model file (best.pth?), not a "
                                              "training checkpoint; resume from checkpoint.pth")
        # The algorithm first: it re-creates models whose structure changed during the run.
        self.algorithm.load_state_dict(state.get("algorithm_state", {}))
        try:
            self.models.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ckpt_io.CheckpointError(f"{path} does not fit this run's models: {str(e).splitlines()[0]}") from e
        for hook in self.hooks:
            if hook.name in state.get("hooks", {}):
                hook.load_state_dict(state["hooks"][hook.name])
        self.history = list(state["history"])
        self.bad_images = {split: dict(paths) for split, paths in state.get("bad_images", {}).items()}
        ckpt_io.set_rng_state(state["rng"], cuda=self.device.type == "cuda")
        epoch = int(state["epoch"])
        self.log.info("resumed %s from epoch %d (%s)", self.algorithm_cls.name, epoch, path)
        return epoch

    # -------------------------------------------------------------- evaluation
    def evaluate(self, split: Optional[str] = None) -> SplitResult:
        """The evaluated model on data set ``split``'s query/gallery split (default: the algorithm's first)."""
        c = self.config
        split = split or self.algorithm.evaluation_splits()[0]
        return evaluate_split(self.network, self.algorithm.data[split], height=c.height, width=c.width,
                              batch_size=c.test_batch_size, workers=c.workers, device=self.device, flip=c.flip_test,
                              crops=c.test_crops,
                              rerank=c.rerank, rerank_distance=c.rerank_distance,
                              progress=c.progress and self.dist.is_main, dist=self.dist,
                              skip_bad=c.on_bad_image == "skip")

    # ---------------------------------------------------------------- training
    def _train_epoch(self, epoch: int, entry: Dict[str, Any]) -> None:
        from tqdm import tqdm

        c = self.config
        start = time.perf_counter()
        loader = self.algorithm.before_epoch(epoch)
        entry["prepare_seconds"] = time.perf_counter() - start
        if loader is None:  # the algorithm has nothing to train on this epoch (e.g. no cluster found)
            entry.update(self.algorithm.epoch_metrics())
            entry["skipped"] = True
            self.log.warning("epoch %d/%d skipped: %s has no training data for it", epoch, c.epochs,
                             self.algorithm_cls.name)
            return
        self.models.train()
        sums: Dict[str, float] = {}
        steps = images = skipped = 0
        start = time.perf_counter()
        bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{c.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (c.progress and self.dist.is_main))
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext())
        for iteration, batch in enumerate(bar):
            bad = _skipped(batch)
            if bad:
                skipped += len(bad)
                self.note_bad_images("train", bad)
                if self.algorithm.batch_images(batch) == 0:
                    raise RuntimeError(f"epoch {epoch}, iteration {iteration}: no image of the batch can be read "
                                       f"({', '.join(p for p, _ in bad[:5])}, ...): check the data set")
            info = StepInfo(epoch, iteration, (epoch - 1) * self.iters_per_epoch + iteration, self.total_steps)
            with autocast:
                losses = self.algorithm.step(batch, info)
            if not losses:
                raise RuntimeError(f"{self.algorithm_cls.name}.step returned no loss")
            # One small all-reduce: every process sees the mean losses, and a non-finite loss on any
            # process stops them all at the same step (none waits in backward for the others).
            reduced = all_reduce_sum(torch.stack([v.detach().float() for v in losses.values()]).cpu())
            values = {name: float(v) / self.dist.world_size for name, v in zip(losses, reduced)}
            if not all(math.isfinite(v) for v in values.values()):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, iteration {iteration} "
                    f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); the step was not taken. The last "
                    f"good checkpoint is {self.path(CHECKPOINT)} (epoch {epoch - 1}). Lower the learning rate "
                    "or check the data and weights."
                )
            self.models.zero_grad()
            self.algorithm.update(losses)
            self.models.step_schedules()
            self.algorithm.after_step(info)
            for hook in self.hooks:
                hook.after_step(self, info)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            sums[""] = sums.get("", 0.0) + sum(values.values())
            steps += 1
            images += self.algorithm.batch_images(batch) * self.dist.world_size
            bar.set_postfix(loss=f"{sums[''] / steps:.3f}")
        bar.close()
        self._sync_buffers()
        seconds = time.perf_counter() - start
        if steps == 0:
            raise RuntimeError(f"epoch {epoch}: the loader yielded no batch")
        # Each process skips the bad images of its own slice of the batches: the run's count is their sum.
        skipped = int(all_reduce_sum(torch.tensor([skipped], dtype=torch.int64))[0])
        if skipped:
            entry["bad_train_images"] = skipped
        entry["loss"] = sums.pop("") / steps
        entry.update({f"loss_{name}": value / steps for name, value in sums.items()})
        entry["lr"] = self.models.first_lr()
        entry["train_seconds"] = seconds
        entry["images_per_second"] = images / seconds if seconds > 0 else 0.0
        entry["outside_training_share"] = entry["prepare_seconds"] / (entry["prepare_seconds"] + seconds)
        entry.update(self.algorithm.epoch_metrics())
        named = ", ".join(f"{name} {value / steps:.3f}" for name, value in sums.items())
        self.log.info("epoch %d/%d: loss %.3f (%s), lr %.2e, %.1f s, %.0f img/s", epoch, c.epochs, entry["loss"],
                      named, entry["lr"] or 0.0, seconds, entry["images_per_second"])

    def _sync_buffers(self) -> None:
        """Every process takes the main process's buffers (BatchNorm running statistics).

        During an epoch each process updates them from its own slice (DDP
        re-broadcasts them at the next forward); extraction and evaluation run
        the bare models on every process, so they must agree first."""
        if self.dist.distributed:
            with torch.no_grad():
                for entry in self.models:
                    for buffer in entry.network.buffers():
                        buffer.copy_(broadcast(buffer))

    def _call(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    # --------------------------------------------------------------------- run
    def run(self) -> Dict[str, Any]:
        """Train (or resume) to ``config.epochs``; returns ``{"history", "best", "final"}``."""
        self._check_out_folder()
        with self._logging():
            c = self.config
            self._build()
            data = self.algorithm.dataset
            self.log.info("pyreid %s: %s on %s (%d train images, %d ids; %d query, %d gallery), %s, device %s, "
                          "%d epochs x %d iterations of %d", pyreid.__version__, self.algorithm_cls.name,
                          ", ".join(c.data_set(n)[0] for n in self.algorithm_cls.datasets), len(data.train),
                          data.num_train_pids, len(data.query), len(data.gallery), c.arch, self.device, c.epochs,
                          self.iters_per_epoch, c.batch_size)
            self._describe_numerics()
            try:
                with self._precision():
                    early = self._loop()
            except BaseException as e:
                done = self.history[-1]["epoch"] if self.history else None
                self.log.error("run stopped after epoch %s: %s: %s", done, type(e).__name__, e)
                self._call("on_failure", e)
                raise
            if early:
                return early
            final = next((h for h in reversed(self.history) if "mAP" in h), {})
            self.log.info("done: %s", ", ".join(f"{k} {100 * final[k]:.1f}%" for k in SCORE_KEYS if k in final))
            self.log.info("outputs in %s", os.path.abspath(self.out))
            return {"history": self.history, "best": self.best, "final": final}

    def _loop(self) -> Dict[str, Any]:
        """Resume or start, then the epochs; the result only when there was nothing to train, else {}."""
        c = self.config
        first = self._resume() + 1 if c.resume else 0
        if c.resume and first > c.epochs:
            # Not an error: the run is complete as asked (its files are left as they are).
            self.log.info("nothing to do: the run in %s already trained %d epochs and --epochs is %d; "
                          "pass a larger --epochs to train it further", self.out, first - 1, c.epochs)
            final = next((h for h in reversed(self.history) if "mAP" in h), {})
            return {"history": self.history, "best": self.best, "final": final, "nothing_to_do": True}
        self._call("before_train")
        for epoch in range(first, c.epochs + 1):
            entry: Dict[str, Any] = {"epoch": epoch}
            if epoch > 0:
                self._train_epoch(epoch, entry)
                self.stop_reason = self.algorithm.stop_reason()
            self._call("after_epoch", epoch, entry)
            self.history.append(entry)
            if epoch == 0:
                self.algorithm.setup()
            self._call("epoch_done", epoch)
            if self.stop_reason:
                self.log.info("%s ends at epoch %d of %d: %s", self.algorithm_cls.name, epoch, c.epochs,
                              self.stop_reason)
                break
        self._call("after_train")
        return {}
