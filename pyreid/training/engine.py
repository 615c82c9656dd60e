"""The one training loop every algorithm runs through.

:class:`Engine` runs ``epochs x iters`` steps of an :class:`~pyreid.algorithms.Algorithm`
and owns everything around them:

* the optimiser and the per-iteration schedule (:mod:`pyreid.training.optim`),
  bfloat16 autocast on CUDA (``amp``), channels-last;
* evaluation at epoch 0, before any training, then every ``eval_step`` epochs
  and after the last one;
* after every epoch (epoch 0 included): ``checkpoint.pth`` (atomic, with the
  optimiser, scheduler, algorithm state, RNG states and history) and
  ``metrics.json`` (``{"config", "history", "status"}``); ``best.pth`` when the
  mAP improves; ``curves.png``;
* at the end: ``cmc.png``, ``ranked_lists.png``, ``embedding.png`` (t-SNE of
  the test features) and ``train.log`` (the console's lines);
* a non-finite loss stops the run before backward (so no weight or memory
  takes the bad step) with the epoch and iteration; the last checkpoint stays;
* ``resume`` continues from ``checkpoint.pth``; on CPU with a fixed seed the
  result equals the uninterrupted run's (the loader's draws and augmentation
  depend only on the seed and the epoch, and the RNG states are restored).

Only the main process (rank 0) writes files and logs; there is no global state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Type

import torch
import torch.nn.functional as F

import pyreid
from pyreid.algorithms.base import Algorithm, StepInfo
from pyreid.data.datasets import build_dataset
from pyreid.distributed import all_reduce_sum, broadcast, gather_objects_equal
from pyreid.evaluation.evaluator import Evaluator
from pyreid.evaluation.sharded import extract_items
from pyreid.models.batch_norm_groups import convert_bn_groups
from pyreid.evaluation.rank import evaluate
from pyreid.training import checkpoint as ckpt_io
from pyreid.training.config import ConfigError, TrainConfig
from pyreid.distributed import DistInfo, current
from pyreid.training.optim import LearningRateSchedule, build_optimizer, build_scheduler

__all__ = ["Engine", "NonFiniteLossError", "RunExistsError", "resolve_device"]

CHECKPOINT = "checkpoint.pth"
BEST = "best.pth"
METRICS = "metrics.json"
LOG = "train.log"
SCORE_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")
# History keys that measure time; everything else is equal between a resumed and an uninterrupted run.
TIMING_KEYS = ("train_seconds", "images_per_second", "prepare_seconds", "eval_seconds", "outside_training_share",
               "pseudo_label_seconds", "extraction_seconds", "jaccard_seconds", "dbscan_seconds", "memory_seconds")


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


class _TqdmHandler(logging.StreamHandler):
    """Console lines that do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _write_json_atomic(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


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
        self.config = config
        self.options = options
        self.algorithm_cls = algorithm_cls
        self.dist = dist or current()
        self.out = config.out
        self.log = logging.getLogger("pyreid.train")
        self.history: List[Dict[str, Any]] = []
        self.best: Dict[str, Any] = {"mAP": -1.0, "epoch": None}
        self._final_features = None

    # ------------------------------------------------------------------ files
    def _path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def _check_out_folder(self) -> None:
        existing = [n for n in (CHECKPOINT, METRICS) if os.path.exists(self._path(n))]
        if self.config.resume:
            if not os.path.exists(self._path(CHECKPOINT)):
                raise ckpt_io.CheckpointError(f"--resume: {self._path(CHECKPOINT)} does not exist: nothing to resume "
                                              f"in {self.out}")
        elif existing:
            raise RunExistsError(f"{self.out} already holds a run ({', '.join(existing)}): pass --resume to "
                                 "continue it, or choose another --out")

    def _config_record(self) -> Dict[str, Any]:
        record = dataclasses.asdict(self.config)
        record["options"] = dataclasses.asdict(self.options) if dataclasses.is_dataclass(self.options) else {}
        return record

    def _write_metrics(self, status: str) -> None:
        if self.dist.is_main:
            _write_json_atomic({"config": self._config_record(), "history": self.history, "status": status},
                               self._path(METRICS))

    def _save_checkpoint(self, epoch: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "pyreid_version": pyreid.__version__,
            "algorithm": self.algorithm_cls.name,
            "epoch": epoch,
            "model": self.network.state_dict(),
            "model_args": self.network.build_args,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "algorithm_state": self.algorithm.state_dict(),
            "rng": ckpt_io.rng_state(),
            "config": self._config_record(),
            "history": self.history,
            "best": self.best,
        }
        ckpt_io.save_atomic(state, self._path(CHECKPOINT))

    def _save_best(self, epoch: int, scores: Dict[str, float]) -> None:
        self.best = {"mAP": scores["mAP"], "epoch": epoch}
        if not self.dist.is_main:
            return
        ckpt_io.save_atomic({
            "format": ckpt_io.FORMAT, "version": ckpt_io.VERSION, "pyreid_version": pyreid.__version__,
            "algorithm": self.algorithm_cls.name, "epoch": epoch, "model": self.network.state_dict(),
            "model_args": self.network.build_args, "config": self._config_record(), "scores": scores,
        }, self._path(BEST))

    @contextlib.contextmanager
    def _logging(self):
        """Console + train.log handlers on the 'pyreid' logger for the run (main process only)."""
        logger = logging.getLogger("pyreid")
        saved = (logger.level, logger.propagate)
        handlers: List[logging.Handler] = []
        if self.dist.is_main:
            os.makedirs(self.out, exist_ok=True)
            formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
            file_handler = logging.FileHandler(self._path(LOG), mode="a")
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
        self.dataset = build_dataset(c.dataset, c.data_root)
        self.iters_per_epoch = c.iters or max(1, len(self.dataset.train) // c.batch_size)
        self.total_steps = c.epochs * self.iters_per_epoch
        torch.manual_seed(c.seed)
        import random

        import numpy as np

        random.seed(c.seed)
        np.random.seed(c.seed)
        # On resume the weights come from the checkpoint: do not fetch or read the starting weights again.
        algo_config = dataclasses.replace(c, weights=None, pretrained=False) if c.resume else c
        self.algorithm = self.algorithm_cls(algo_config, self.options, self.dataset, self.device,
                                            self.iters_per_epoch, self.dist)
        network = self.algorithm.build_model()  # build_model logs what a --weights file did not fit
        if c.bn_groups > 1:
            per_process = c.batch_size // self.dist.world_size
            if per_process % c.bn_groups:
                raise ConfigError(f"bn_groups {c.bn_groups} must divide each process's batch ({per_process} = "
                                  f"batch_size {c.batch_size} / {self.dist.world_size} processes)")
            convert_bn_groups(network, c.bn_groups)
        if c.sync_bn:
            if self.device.type != "cuda":
                raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); on CPU use "
                                  "bn_groups to choose the statistics' batch size")
            if not self.dist.distributed:
                self.log.warning("sync_bn has no effect in a single process: BatchNorm already sees the whole batch")
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        network = network.to(self.device)
        if c.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.algorithm.network = network
        self.algorithm.model = network
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.algorithm.model = DistributedDataParallel(
                network, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = build_optimizer(network.parameters(), c)
        self.scheduler = build_scheduler(self.optimizer, c, self.iters_per_epoch)
        self.amp = c.amp and self.device.type == "cuda"

    def _resume(self) -> int:
        path = self._path(CHECKPOINT)
        state = ckpt_io.load_checkpoint(path)
        if state.get("algorithm") != self.algorithm_cls.name:
            raise ckpt_io.CheckpointError(f"{path} was written by algorithm '{state.get('algorithm')}', not "
                                          f"'{self.algorithm_cls.name}'")
        for key in ("model", "optimizer", "scheduler", "rng", "history", "epoch"):
            if key not in state:
                raise ckpt_io.CheckpointError(f"{path} has no '{key}': it is a model file (best.pth?), not a "
                                              "training checkpoint; resume from checkpoint.pth")
        try:
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as e:
            raise ckpt_io.CheckpointError(f"{path} does not fit this run's model: {str(e).splitlines()[0]}") from e
        self.scheduler.load_state_dict(state["scheduler"])
        # The schedule follows this run's config (epochs may have been extended), not the saved one.
        self.scheduler.lr_lambdas = [LearningRateSchedule(self.config, self.iters_per_epoch)]
        self.algorithm.load_state_dict(state.get("algorithm_state", {}))
        self.history = list(state["history"])
        self.best = dict(state.get("best", self.best))
        ckpt_io.set_rng_state(state["rng"], cuda=self.device.type == "cuda")
        epoch = int(state["epoch"])
        self.log.info("resumed %s from epoch %d (%s)", self.algorithm_cls.name, epoch, path)
        return epoch

    # -------------------------------------------------------------- evaluation
    def evaluate(self, keep_features: bool = False) -> Dict[str, Any]:
        """Scores of the current model on the query/gallery split (fractions in [0, 1])."""
        c = self.config
        common = dict(height=c.height, width=c.width, batch_size=c.test_batch_size, num_workers=c.workers,
                      device=self.device, flip=c.flip_test, progress=c.progress and self.dist.is_main, dist=self.dist)
        q_feat, q_pids, q_cams = extract_items(self.network, self.dataset.query, desc="query", **common)
        g_feat, g_pids, g_cams = extract_items(self.network, self.dataset.gallery, desc="gallery", **common)
        evaluator = Evaluator(self.network, [], [], rerank=c.rerank, rerank_distance=c.rerank_distance)
        distmat = evaluator.distances(q_feat, g_feat)
        scores = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=min(50, distmat.shape[1]))
        if keep_features:
            self._final_features = (q_feat, g_feat, q_pids, g_pids, q_cams, g_cams, distmat, scores["cmc"])
        return scores

    def _evaluate_epoch(self, epoch: int, entry: Dict[str, Any]) -> None:
        start = time.perf_counter()
        scores = self.evaluate(keep_features=epoch == self.config.epochs)
        entry.update({key: float(scores[key]) for key in SCORE_KEYS})
        entry["eval_seconds"] = time.perf_counter() - start
        self.log.info("epoch %d: mAP %.1f%%  rank-1 %.1f%%  rank-5 %.1f%%  rank-10 %.1f%%  mINP %.1f%%", epoch,
                      *(100 * entry[key] for key in ("mAP", "rank1", "rank5", "rank10", "mINP")))
        if entry["mAP"] > self.best["mAP"]:
            self._save_best(epoch, {key: entry[key] for key in SCORE_KEYS})

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
        self.network.train()
        sums: Dict[str, float] = {}
        steps = images = 0
        start = time.perf_counter()
        bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}/{c.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (c.progress and self.dist.is_main))
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext())
        for iteration, batch in enumerate(bar):
            info = StepInfo(epoch, iteration, (epoch - 1) * self.iters_per_epoch + iteration, self.total_steps)
            with autocast:
                losses = self.algorithm.step(batch, info)
            if not losses:
                raise RuntimeError(f"{self.algorithm_cls.name}.step returned no loss")
            total = sum(losses.values())
            # One small all-reduce: every process sees the mean losses, and a non-finite loss on any
            # process stops them all at the same step (none waits in backward for the others).
            reduced = all_reduce_sum(torch.stack([v.detach().float() for v in losses.values()]).cpu())
            values = {name: float(v) / self.dist.world_size for name, v in zip(losses, reduced)}
            if not all(math.isfinite(v) for v in values.values()):
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, iteration {iteration} "
                    f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); the step was not taken. The last "
                    f"good checkpoint is {self._path(CHECKPOINT)} (epoch {epoch - 1}). Lower the learning rate "
                    "or check the data and weights."
                )
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.algorithm.after_step(info)
            if c.check_ranks:
                self._check_ranks(epoch, iteration)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            sums[""] = sums.get("", 0.0) + sum(values.values())
            steps += 1
            images += int(batch[0].shape[0]) * self.dist.world_size
            bar.set_postfix(loss=f"{sums[''] / steps:.3f}")
        bar.close()
        self._sync_buffers()
        if c.check_ranks:
            self._check_ranks(epoch, iteration, buffers=True)
        seconds = time.perf_counter() - start
        if steps == 0:
            raise RuntimeError(f"epoch {epoch}: the loader yielded no batch")
        entry["loss"] = sums.pop("") / steps
        entry.update({f"loss_{name}": value / steps for name, value in sums.items()})
        entry["lr"] = float(self.optimizer.param_groups[0]["lr"])
        entry["train_seconds"] = seconds
        entry["images_per_second"] = images / seconds if seconds > 0 else 0.0
        entry["outside_training_share"] = entry["prepare_seconds"] / (entry["prepare_seconds"] + seconds)
        entry.update(self.algorithm.epoch_metrics())
        named = ", ".join(f"{name} {value / steps:.3f}" for name, value in sums.items())
        self.log.info("epoch %d/%d: loss %.3f (%s), lr %.2e, %.1f s, %.0f img/s", epoch, c.epochs, entry["loss"],
                      named, entry["lr"], seconds, entry["images_per_second"])

    def _sync_buffers(self) -> None:
        """Every process takes the main process's BatchNorm running statistics.

        During an epoch each process updates them from its own slice (DDP
        re-broadcasts them at the next forward); extraction and evaluation run
        the bare model on every process, so they must agree first."""
        if self.dist.distributed:
            with torch.no_grad():
                for buffer in self.network.buffers():
                    buffer.copy_(broadcast(buffer))

    def _check_ranks(self, epoch: int, iteration: int, buffers: bool = False) -> None:
        """Raise unless every process holds the same weights and algorithm state (exact, by hash).

        Mid-epoch the BatchNorm running statistics differ by design (see
        :meth:`_sync_buffers`): they are compared only when ``buffers``."""
        import hashlib

        state = {f"model.{k}": v for k, v in self.network.named_parameters()}
        if buffers:
            state.update({f"model.{k}": v for k, v in self.network.named_buffers()})
        state.update({f"algorithm.{k}": v for k, v in self.algorithm.consistency_tensors().items()})
        digests = [hashlib.sha1(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
                   if v.numel() else "" for v in state.values()]
        everyone = gather_objects_equal(digests)
        if everyone is None:
            return
        for index, name in enumerate(state):
            if len({rank[index] for rank in everyone}) > 1:
                raise RuntimeError(f"check_ranks: the processes hold different {name} after epoch {epoch}, "
                                   f"iteration {iteration}")

    # ------------------------------------------------------------------- plots
    def _plot_curves(self) -> None:
        if not (self.config.plots and self.dist.is_main):
            return
        from pyreid.training.plots import plot_training_curves

        plot_training_curves(self.history, self._path("curves.png"),
                             title=f"{self.algorithm_cls.name} on {self.config.dataset} ({self.config.arch})")

    def _plot_final(self) -> None:
        if not (self.config.plots and self.dist.is_main and self._final_features is not None):
            return
        from pyreid.evaluation.visualize import plot_cmc, plot_embedding, plot_ranked_lists

        q_feat, g_feat, q_pids, g_pids, q_cams, g_cams, distmat, cmc = self._final_features
        plot_cmc({f"{self.algorithm_cls.name}, epoch {self.config.epochs}": cmc}, self._path("cmc.png"),
                 max_rank=20)
        plot_ranked_lists(distmat, [p for p, _, _ in self.dataset.query], [p for p, _, _ in self.dataset.gallery],
                          q_pids, g_pids, q_cams, g_cams, self._path("ranked_lists.png"),
                          query_indices=list(range(0, len(self.dataset.query), max(1, len(self.dataset.query) // 6)))[:6])
        # t-SNE of the test images of (at most) 30 identities, query and gallery together.
        features = torch.cat([q_feat, g_feat])
        pids = torch.cat([q_pids, g_pids])
        chosen = torch.unique(pids[pids > 0])[:30]
        keep = torch.isin(pids, chosen)
        if int(keep.sum()) >= 3:
            plot_embedding(F.normalize(features[keep], dim=1), pids[keep], self._path("embedding.png"),
                           title="t-SNE of the final test features")

    # --------------------------------------------------------------------- run
    def run(self) -> Dict[str, Any]:
        """Train (or resume) to ``config.epochs``; returns ``{"history", "best", "final"}``."""
        self._check_out_folder()
        with self._logging():
            c = self.config
            self._build()
            self.log.info("pyreid %s: %s on %s (%d train images, %d ids; %d query, %d gallery), %s, device %s, "
                          "%d epochs x %d iterations of %d", pyreid.__version__, self.algorithm_cls.name, c.dataset,
                          len(self.dataset.train), self.dataset.num_train_pids, len(self.dataset.query),
                          len(self.dataset.gallery), c.arch, self.device, c.epochs, self.iters_per_epoch,
                          c.batch_size)
            epoch = 0
            try:
                if c.resume:
                    epoch = self._resume()
                else:
                    entry: Dict[str, Any] = {"epoch": 0}
                    self._evaluate_epoch(0, entry)
                    self.history.append(entry)
                    self.algorithm.setup()
                    self._save_checkpoint(0)
                    self._write_metrics("running" if c.epochs else "finished")
                    self._plot_curves()
                for epoch in range(epoch + 1, c.epochs + 1):
                    entry = {"epoch": epoch}
                    self._train_epoch(epoch, entry)
                    if epoch % c.eval_step == 0 or epoch == c.epochs:
                        self._evaluate_epoch(epoch, entry)
                    self.history.append(entry)
                    self._save_checkpoint(epoch)
                    self._write_metrics("running" if epoch < c.epochs else "finished")
                    self._plot_curves()
                self._plot_final()
            except BaseException as e:
                done = self.history[-1]["epoch"] if self.history else None
                self.log.error("run stopped after epoch %s: %s: %s", done, type(e).__name__, e)
                if self.history:  # a run that never finished epoch 0 leaves no metrics (so it can start again)
                    self._write_metrics(f"failed after epoch {done}: {type(e).__name__}: {e}")
                raise
            final = next((h for h in reversed(self.history) if "mAP" in h), {})
            self.log.info("done: %s", ", ".join(f"{k} {100 * final[k]:.1f}%" for k in SCORE_KEYS if k in final))
            self.log.info("outputs in %s", os.path.abspath(self.out))
            return {"history": self.history, "best": self.best, "final": final}
