"""What happens around the training loop, one hook each (fast-reid's ``hooks.py`` is the shape).

The engine calls every hook, in order, at these points:

* ``before_train(engine)``: once, after the models are built (and resumed);
* ``after_step(engine, info)``: after every optimiser step;
* ``after_epoch(engine, epoch, entry)``: after epoch ``epoch``'s training
  (epoch 0: none), before ``entry`` joins the history: add numbers here;
* ``epoch_done(engine, epoch)``: after the entry joined the history: write here;
* ``after_train(engine)``: once, after the last epoch;
* ``on_failure(engine, error)``: when the run stops on an error.

A hook with state that must survive a resume returns it from ``state_dict``
(saved in the checkpoint under the hook's ``name``). Only the main process
writes files. The engine's own hooks: :class:`EvaluationHook`,
:class:`RankCheckHook`, :class:`CheckpointHook`, :class:`CurvesHook`,
:class:`FinalPlotsHook`; an algorithm adds its own through
:meth:`pyreid.training.algorithm.Algorithm.hooks`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any, Dict, Optional

import torch

from pyreid.distributed import gather_objects_equal
from pyreid.evaluation.protocol import (
    SCORE_KEYS,
    SplitResult,
    UnlabelledSplitError,
    check_labelled,
    plot_split,
)

if TYPE_CHECKING:  # the engine imports this module
    from pyreid.training.algorithm import StepInfo
    from pyreid.training.engine import Engine

__all__ = ["Hook", "EvaluationHook", "RankCheckHook", "CheckpointHook", "CurvesHook", "FinalPlotsHook",
           "TensorBoardHook", "write_json_atomic"]


class Hook:
    """Does nothing at every point; subclasses override what they need."""

    name = ""

    def before_train(self, engine: "Engine") -> None:
        pass

    def after_step(self, engine: "Engine", info: "StepInfo") -> None:
        pass

    def after_epoch(self, engine: "Engine", epoch: int, entry: Dict[str, Any]) -> None:
        pass

    def epoch_done(self, engine: "Engine", epoch: int) -> None:
        pass

    def after_train(self, engine: "Engine") -> None:
        pass

    def on_failure(self, engine: "Engine", error: BaseException) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


def write_json_atomic(obj: Any, path: str) -> None:
    """``obj`` as JSON through a temporary file and a rename; a failed write (a full disk) raises
    :class:`pyreid.training.checkpoint.CheckpointWriteError` naming ``path``, which is left as it was."""
    from pyreid.training.checkpoint import write_error

    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(e, path) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class EvaluationHook(Hook):
    """Scores the evaluated model at epoch 0, every ``eval_step`` epochs and after the last; keeps
    ``best.pth`` (the best mAP so far). The algorithm's first evaluation split gives the run's scores,
    the others are recorded under their name (``source_mAP``, ...)."""

    name = "evaluation"

    def __init__(self) -> None:
        self.best: Dict[str, Any] = {"mAP": -1.0, "epoch": None}
        self.final: Optional[SplitResult] = None
        self.unlabelled: Dict[str, str] = {}  # split -> why it cannot be scored (said once)

    def _labelled(self, engine: "Engine", split: str) -> bool:
        """Whether ``split``'s query and gallery carry identities; an unlabelled one (a folder of the
        user's own images) is not scored, and the log says so once: training goes on."""
        if split not in self.unlabelled:
            try:
                check_labelled(engine.algorithm.data[split])
            except UnlabelledSplitError as e:
                self.unlabelled[split] = str(e)
                engine.log.warning("the %s data set is not evaluated: %s (training goes on; checkpoint.pth holds "
                                   "the model)", split, e)
            else:
                self.unlabelled[split] = ""
        return not self.unlabelled[split]

    def due(self, engine: "Engine", epoch: int) -> bool:
        c = engine.config
        return epoch == 0 or epoch % c.eval_step == 0 or epoch == c.epochs or bool(engine.stop_reason)

    def after_epoch(self, engine: "Engine", epoch: int, entry: Dict[str, Any]) -> None:
        if not self.due(engine, epoch):
            return
        start = time.perf_counter()
        splits = engine.algorithm.evaluation_splits()
        for index, split in enumerate(splits):
            if not self._labelled(engine, split):
                continue
            result = engine.evaluate(split)
            prefix = "" if index == 0 else f"{split}_"
            entry.update({prefix + key: value for key, value in result.summary().items()})
            for part, bad in result.failed.items():  # the same images at every evaluation: logged once
                entry[f"{prefix}bad_{part}_images"] = len(bad)
                engine.note_bad_images(prefix + part, bad)
            if index == 0 and (epoch == engine.config.epochs or engine.stop_reason):
                self.final = result
            engine.log.info("epoch %d: %smAP %.1f%%  rank-1 %.1f%%  rank-5 %.1f%%  rank-10 %.1f%%  mINP %.1f%%",
                            epoch, f"{split} " if index else "",
                            *(100 * entry[prefix + key] for key in ("mAP", "rank1", "rank5", "rank10", "mINP")))
        entry["eval_seconds"] = time.perf_counter() - start
        if "mAP" in entry and entry["mAP"] > self.best["mAP"]:
            self.best = {"mAP": entry["mAP"], "epoch": epoch}
            engine.save_best(epoch, {key: entry[key] for key in SCORE_KEYS})

    def state_dict(self) -> Dict[str, Any]:
        return {"best": dict(self.best)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best = dict(state.get("best", self.best))


class RankCheckHook(Hook):
    """``check_ranks``: after every step, raise unless every process holds the same weights and
    algorithm state (exact, by hash); at the end of an epoch the buffers too.

    Mid-epoch the BatchNorm running statistics differ by design (each process
    updates them from its own slice until the engine syncs them at the end of
    the epoch), so they are compared only then."""

    name = "rank_check"

    def after_step(self, engine: "Engine", info: "StepInfo") -> None:
        self.check(engine, info.epoch, info.iteration)

    def after_epoch(self, engine: "Engine", epoch: int, entry: Dict[str, Any]) -> None:
        if epoch > 0 and not entry.get("skipped"):
            self.check(engine, epoch, engine.iters_per_epoch - 1, buffers=True)

    @staticmethod
    def check(engine: "Engine", epoch: int, iteration: int, buffers: bool = False) -> None:
        state: Dict[str, torch.Tensor] = {}
        for entry in engine.models:
            prefix = "model." if entry.name == engine.algorithm.evaluated_model else f"{entry.name}."
            state.update({prefix + k: v for k, v in entry.network.named_parameters()})
            if buffers:
                state.update({prefix + k: v for k, v in entry.network.named_buffers()})
        state.update({f"algorithm.{k}": v for k, v in engine.algorithm.consistency_tensors().items()})
        digests = [hashlib.sha1(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
                   .hexdigest() if v.numel() else "" for v in state.values()]
        everyone = gather_objects_equal(digests)
        if everyone is None:
            return
        for index, name in enumerate(state):
            if len({rank[index] for rank in everyone}) > 1:
                raise RuntimeError(f"check_ranks: the processes hold different {name} after epoch {epoch}, "
                                   f"iteration {iteration}")


class CheckpointHook(Hook):
    """After every epoch (epoch 0 included): ``checkpoint.pth`` (atomic) and ``metrics.json``
    (``{"config", "history", "status"}``); a failure is recorded in ``metrics.json``'s status."""

    name = "checkpoint"

    def epoch_done(self, engine: "Engine", epoch: int) -> None:
        engine.save_checkpoint(epoch)
        if engine.stop_reason:
            engine.write_metrics(f"finished at epoch {epoch}: {engine.stop_reason}")
        else:
            engine.write_metrics("running" if epoch < engine.config.epochs else "finished")

    def on_failure(self, engine: "Engine", error: BaseException) -> None:
        # A run that never finished epoch 0 leaves no metrics (so it can start again).
        if engine.history:
            done = engine.history[-1]["epoch"]
            from pyreid.training.checkpoint import CheckpointWriteError

            try:
                engine.write_metrics(f"failed after epoch {done}: {type(error).__name__}: {error}")
            except CheckpointWriteError as e:  # the disk that failed the run: the first error is the one to see
                engine.log.error("%s", e)


class CurvesHook(Hook):
    """``curves.png`` after every epoch: losses, scores and, for clustering algorithms, pseudo labels."""

    name = "curves"

    def epoch_done(self, engine: "Engine", epoch: int) -> None:
        if not engine.dist.is_main:
            return
        from pyreid.training.plots import plot_training_curves

        c = engine.config
        plot_training_curves(engine.history, engine.path("curves.png"),
                             title=f"{engine.algorithm_cls.name} on {c.data_set(engine.algorithm.evaluation_splits()[0])[0]} ({c.arch})")


class FinalPlotsHook(Hook):
    """At the end: ``cmc.png``, ``ranked_lists.png`` and ``embedding.png`` of the last evaluation."""

    name = "final_plots"

    def __init__(self, evaluation: EvaluationHook):
        self.evaluation = evaluation

    def after_train(self, engine: "Engine") -> None:
        result = self.evaluation.final
        if not engine.dist.is_main or result is None:
            return
        split = engine.algorithm.evaluation_splits()[0]
        epoch = engine.history[-1]["epoch"]
        plot_split(result, engine.algorithm.data[split], engine.path(""), f"{engine.algorithm_cls.name}, epoch {epoch}",
                   embedding=True)


class TensorBoardHook(Hook):
    """``--tensorboard``: every number of each ``metrics.json`` entry as a TensorBoard scalar, step = epoch.

    Written under ``OUT/tensorboard`` by the main process only, after the entry
    joined the history, so the event files hold exactly what ``metrics.json``
    holds (losses, learning rate, scores, cluster counts, pseudo-label quality,
    timings), grouped by kind: ``scores/mAP``, ``loss/loss_id``, ``clusters/num_clusters``,
    ``pseudo_labels/ari``, ``time/train_seconds``, ... A resumed run appends
    the epochs after its checkpoint. Needs the optional ``tensorboard`` package.

    Example:
        $ pyreid train supervised --config supervised_synthetic_cpu --out runs/sup --tensorboard
        $ tensorboard --logdir runs/sup/tensorboard
    """

    name = "tensorboard"
    FOLDER = "tensorboard"
    _GROUPS = (("scores", ("mAP", "rank", "mINP")), ("loss", ("loss",)), ("lr", ("lr",)),
               ("clusters", ("num_clusters", "num_outliers", "largest_cluster")),
               ("pseudo_labels", ("ari", "nmi", "precision", "recall", "f1", "selected", "selection_")))

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401 - needs the tensorboard package
        except ImportError as e:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or pip install \"pyreid[tensorboard]\")") from e
        self.writer = None

    @classmethod
    def tag(cls, key: str) -> str:
        """The scalar's name: ``group/key`` (a second test split's ``source_mAP`` goes with the scores)."""
        bare = key.split("_", 1)[1] if key.startswith(("source_", "target_")) else key
        if key.endswith("_seconds") or key in ("images_per_second", "outside_training_share"):
            return f"time/{key}"
        for group, prefixes in cls._GROUPS:
            if bare.startswith(prefixes):
                return f"{group}/{key}"
        return f"other/{key}"

    def epoch_done(self, engine: "Engine", epoch: int) -> None:
        if not engine.dist.is_main or not engine.history:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=engine.path(self.FOLDER))
        entry = engine.history[-1]
        for key, value in entry.items():
            # bools (e.g. "skipped") are flags, not measurements; non-finite values would break the plots
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value == value and abs(value) != float("inf"):
                self.writer.add_scalar(self.tag(key), value, global_step=entry.get("epoch", epoch))
        self.writer.flush()

    def after_train(self, engine: "Engine") -> None:
        self.close()

    def on_failure(self, engine: "Engine", error: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
