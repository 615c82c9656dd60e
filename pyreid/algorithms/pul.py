"""PUL (Fan, Zheng, Yan and Yang, "Unsupervised Person Re-identification: Clustering and Fine-tuning",
TOMM 2018): progressive unsupervised learning from a source model, in rounds.

Start from a source model (``--weights``, e.g. a pyreid supervised model of
another data set: the published protocol is Duke -> Market and Market ->
Duke). Each round of ``round_epochs`` epochs:

1. extract the unlabelled target training set's features with the previous
   round's model (round 1: the source model);
2. k-means with K = ``clusters`` (``pyreid.ops.kmeans``, k-means++ seeding;
   on the features as they are, as published, or normalised);
3. each cluster's **centre is the real image nearest its centroid**, among
   the cluster's images (so every non-empty cluster keeps at least one
   reliable image);
4. an image is **reliable** when the cosine similarity of its feature to its
   own cluster's centre exceeds λ = ``threshold`` (the paper);
   ``selection: any-centre`` reproduces the published code, which keeps an
   image whose similarity to *any* centre exceeds λ, with its own k-means
   label. The centres are always kept; a round where nothing else passes λ
   trains on them alone and says so;
5. fine-tune **from the source model** (not the previous round's: the model is
   re-created with :meth:`~pyreid.training.models.ModelSet.replace`) with a
   new K-way classifier (dropout 0.5 before it with the published head) on
   the reliable images only;
6. stop after ``--epochs / --round-epochs`` rounds, or earlier when the number
   of reliable images has not grown for ``patience`` rounds (the paper's
   convergence rule; the published code runs a fixed 25 rounds).

Semi-supervised (``labelled_ids`` = N, published 50 with K = 750): the first N
training identities keep their labels 0..N-1 and are always selected; the
other images are clustered into K - N clusters labelled N..K-1; one K-way
classifier.

Each round records the selected count and share, the selection precision
(the share of selected images whose cluster's majority identity is their own,
when the training set has identities), the clustering's quality over all
images and over the selected ones, the k-means time and inertia
(``metrics.json``, the log, and ``self_paced.png``: selected count and
selection precision per round beside mAP). The round, its labels and the
selection history are state: a run resumed inside a round continues it.

Two model and augmentation settings: ``head: published`` (ResNet-50 average
pooling, last stride 2, pooled features -> dropout 0.5 -> K-way softmax;
k-means on the pooled features) with ``augmentation: published`` (224 x 224,
rotation 20 deg, shifts 0.2, no flip) and shuffled image batches of 16, SGD
1e-3 momentum 0.9 (the Keras code); or ``head: bnneck`` with ``augmentation:
reid`` and ``sampling: identities``, pyreid's usual BN-neck model and 256 x 128
P x K training.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from pyreid.algorithms.options import PUL_DEFAULTS, PULOptions
from pyreid.cluster.pseudo_labeler import KMeansClustering, PseudoLabeler
from pyreid.data.transforms import build_transforms
from pyreid.losses.cross_entropy import CrossEntropyLoss
from pyreid.models.model import build_model
from pyreid.training.algorithm import Algorithm, StepInfo
from pyreid.training.config import ConfigError
from pyreid.training.hooks import Hook

__all__ = ["PUL", "PULOptions", "centre_indices", "reliable", "stopped_growing"]

logger = logging.getLogger("pyreid.algorithms.pul")


# Rows per chunk of the per-image float64 arithmetic below: no N x D float64 copy.
_CHUNK_ROWS = 1024


def _own_rows(features: torch.Tensor, others: torch.Tensor, index: torch.Tensor, fn) -> torch.Tensor:
    """fn(row in float64, others[index] in float64) per row, in chunks: N float64 values."""
    out = torch.empty(features.shape[0], dtype=torch.float64)
    for begin in range(0, features.shape[0], _CHUNK_ROWS):
        end = min(begin + _CHUNK_ROWS, features.shape[0])
        out[begin:end] = fn(features[begin:end].double(), others[index[begin:end]].double())
    return out


@torch.no_grad()
def centre_indices(features: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """For each cluster k, the index of its image nearest (Euclidean) to ``centroids[k]``, or -1 for a
    cluster without images. ``features`` must be in the space k-means ran in."""
    k, n = centroids.shape[0], features.shape[0]
    member = labels >= 0
    index, cluster = torch.arange(n)[member], labels[member]
    distance = _own_rows(features[member], centroids, cluster, lambda a, b: ((a - b) ** 2).sum(1))
    nearest = torch.full((k,), float("inf"), dtype=torch.float64).scatter_reduce(0, cluster, distance, "amin")
    # The nearest member of each cluster; among equally near ones the first image.
    tied = distance == nearest[cluster]
    centres = torch.full((k,), n, dtype=torch.int64).scatter_reduce(0, cluster[tied], index[tied], "amin")
    centres[centres == n] = -1
    return centres


@torch.no_grad()
def reliable(features: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, threshold: float,
             any_centre: bool = False) -> torch.Tensor:
    """N bools: cosine similarity to its own cluster's centre image > ``threshold`` (``any_centre``: to
    any centre image); the centre images themselves are always reliable. Images labelled -1 are not."""
    present = centres >= 0
    if any_centre:  # every image against every centre: an N x K product
        unit = F.normalize(features.double(), dim=1)
        similarity = unit @ unit[centres.clamp(min=0)].T
        similarity[:, ~present] = -2.0
        keep = similarity.max(dim=1).values > threshold
    else:  # one product per image, with its own centre
        own_centre = centres[labels.clamp(min=0)]
        own = _own_rows(features, features, own_centre.clamp(min=0),
                        lambda a, b: (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1))
        keep = (own > threshold) & (own_centre >= 0)
    keep[centres[present]] = True
    return keep & (labels >= 0)


def stopped_growing(selected: List[int], patience: int) -> bool:
    """The paper's convergence rule: none of the last ``patience`` rounds selected more images than
    the best round before them (``patience`` 0: never)."""
    if patience < 1 or len(selected) <= patience:
        return False
    return max(selected[-patience:]) <= max(selected[:-patience])


class _PULClustering:
    """k-means into K (or K - N around N labelled identities); keeps the centres for the selection."""

    def __init__(self, options: PULOptions, labelled: Optional[torch.Tensor], seed: int):
        self.labelled = labelled  # N bools, or None (fully unsupervised)
        n = options.labelled_ids
        self.offset = n
        self.kmeans = KMeansClustering(options.clusters - n, iters=options.kmeans_iters, seed=seed,
                                       normalize=options.normalize)
        self.centres: Optional[torch.Tensor] = None

    def __call__(self, features: torch.Tensor):
        """Labels (the labelled identities' images -1 here: they keep their own) and the k-means numbers;
        ``self.centres`` (K entries, -1 for a labelled class or an empty cluster) index the centre images."""
        rest = torch.arange(features.shape[0]) if self.labelled is None else (~self.labelled).nonzero().flatten()
        if rest.numel() < self.kmeans.k:
            raise ConfigError(f"pul: {rest.numel()} unlabelled images cannot form {self.kmeans.k} clusters")
        sub, metrics = self.kmeans(features[rest.to(features.device)])
        local = centre_indices(self.kmeans.space.cpu(), sub.cpu(), self.kmeans.centroids.cpu())
        labels = torch.full((features.shape[0],), -1, dtype=torch.int64)
        labels[rest] = sub.cpu() + self.offset
        self.centres = torch.cat([torch.full((self.offset,), -1, dtype=torch.int64),
                                  torch.where(local >= 0, rest[local.clamp(min=0)], local)])
        metrics["empty_clusters"] = int((local < 0).sum())
        if metrics["empty_clusters"]:
            logger.warning("k-means left %d of %d clusters empty: they have no centre and no image this round",
                           metrics["empty_clusters"], self.kmeans.k)
        return labels, metrics


class SelfPacedCurveHook(Hook):
    """``self_paced.png`` after every round: selected count and selection precision per round beside mAP."""

    name = "self_paced_curve"

    def epoch_done(self, engine, epoch: int) -> None:
        if not (engine.dist.is_main and engine.config.plots):
            return
        rounds = [h for h in engine.history if "selected" in h]
        if not rounds:
            return
        from pyreid.evaluation.visualize import pyplot

        plt = pyplot()
        fig, (ax_sel, ax_map) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
        try:
            numbers = [h["round"] for h in rounds]
            ax_sel.plot(numbers, [h["selected"] for h in rounds], marker="o", color="k", label="selected images")
            from matplotlib.ticker import MaxNLocator

            for ax in (ax_sel, ax_map):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax_sel.set_ylim(0, 1.05 * len(engine.algorithm.dataset.train))
            ax_sel.set_xlabel("round")
            ax_sel.set_ylabel("selected (reliable) images")
            ax_sel.grid(True, alpha=0.3)
            if any("selection_precision" in h for h in rounds):
                twin = ax_sel.twinx()
                twin.plot(numbers, [h.get("selection_precision", float("nan")) for h in rounds], marker="x",
                          color="tab:red", label="selection precision")
                twin.set_ylim(0, 1)
                twin.set_ylabel("selection precision")
                lines = ax_sel.get_legend_handles_labels()
                more = twin.get_legend_handles_labels()
                ax_sel.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
            evaluated = [h for h in engine.history if "mAP" in h]
            ax_map.plot([h["epoch"] for h in evaluated], [100 * h["mAP"] for h in evaluated], marker="o", label="mAP")
            ax_map.plot([h["epoch"] for h in evaluated], [100 * h["rank1"] for h in evaluated], marker="o",
                        label="rank-1")
            ax_map.set_xlabel("epoch")
            ax_map.set_ylabel("%")
            ax_map.set_ylim(0, 100)
            ax_map.grid(True, alpha=0.3)
            ax_map.legend(loc="lower right")
            fig.suptitle("PUL: the self-paced curve")
            fig.tight_layout()
            fig.savefig(os.path.join(engine.out, "self_paced.png"), format="png")
        finally:
            plt.close(fig)


class PUL(Algorithm):
    """Unsupervised: k-means pseudo labels of reliable images, fine-tuning restarted from the source
    model every round"""

    name = "pul"
    Options = PULOptions
    config_defaults = PUL_DEFAULTS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o, c = self.options, self.config
        train = self.dataset.train
        if o.clusters > len(train):
            raise ConfigError(f"pul: {o.clusters} clusters for {len(train)} training images; lower --clusters")
        self.labelled: Optional[torch.Tensor] = None
        if o.labelled_ids:
            if o.labelled_ids > self.dataset.num_train_pids:
                raise ConfigError(f"pul: --labelled-ids {o.labelled_ids} but the training set has "
                                  f"{self.dataset.num_train_pids} identities")
            self.labelled = torch.tensor([pid < o.labelled_ids for _, pid, _ in train])
        # Every round restarts from these weights; kept in the state since a resumed run's config has none.
        pretrained, weights = c.starting_weights()  # a --weights file wins over pretrained
        self.source = {"weights": weights, "pretrained": pretrained}
        self.round = 0
        self.labels: Optional[torch.Tensor] = None
        self.selected: List[int] = []
        self.stopped: Optional[str] = None
        self._metrics: Dict[str, float] = {}
        self.loss = CrossEntropyLoss(0.0)

    # ------------------------------------------------------------------ model
    def build_model(self):
        c, o = self.config, self.options
        published = o.head == "published"
        return build_model(c.arch, pretrained=self.source["pretrained"], weights=self.source["weights"],
                           pooling=c.pooling, last_stride=c.last_stride, neck="none" if published else "bn",
                           num_classes=o.clusters, classifier_dropout=o.dropout if published else 0.0)

    def transform(self):
        c = self.config
        if self.options.augmentation == "published":
            return build_transforms(c.height, c.width, train=True, flip_prob=0.0, pad=0, erasing_prob=0.0,
                                    rotation=20.0, shift=0.2)
        return None  # the loader's usual re-ID augmentation

    # ------------------------------------------------------------------ rounds
    def before_epoch(self, epoch: int):
        o = self.options
        if self.stopped:
            return None
        if (epoch - 1) % o.round_epochs == 0:
            self._start_round(epoch)
            if self.stopped:
                return None
        items = [(path, int(label), camid) for (path, _, camid), label in zip(self.dataset.train, self.labels.tolist())
                 if label >= 0]
        return self.train_loader(items, epoch, camera_aware=False, shuffle_images=o.sampling == "images",
                                 transform=self.transform())

    def _start_round(self, epoch: int) -> None:
        o = self.options
        self.round += 1
        train = self.dataset.train
        clustering = _PULClustering(o, self.labelled, seed=self.config.seed + self.round)

        def select(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            keep = reliable(features.cpu(), labels, clustering.centres, o.threshold,
                            any_centre=o.selection == "any-centre")
            if self.labelled is not None:
                keep |= self.labelled
            return keep

        labeler = PseudoLabeler(clustering, select=select, renumber=False, device=self.device, dist=self.dist)
        # Round r clusters the features of round r - 1's model (round 1: the source model).
        result = labeler(lambda: self.extract(train, desc=f"features (round {self.round})"),
                         identities=[pid for _, pid, _ in train])
        labels = result.labels
        if self.labelled is not None:
            labels = torch.where(self.labelled, torch.tensor([pid for _, pid, _ in train]), labels)
        self.labels = labels
        count = int(result.metrics["selected"])
        metrics = dict(result.metrics, round=self.round, selected_share=count / len(train))
        self._metrics = metrics
        self.log.info("round %d (epoch %d): %s", self.round, epoch, result.summary())
        # Only the main process clustered: it alone knows the centres (the log is its own anyway).
        always = (int((clustering.centres >= 0).sum()) if clustering.centres is not None else 0) + \
            (int(self.labelled.sum()) if self.labelled is not None else 0)
        if self.dist.is_main and count <= always:
            self.log.warning("round %d: no image but the cluster centres passes the threshold %.3f; training on "
                             "the centres alone", self.round, o.threshold)
        self.selected.append(count)
        if stopped_growing(self.selected, o.patience):
            self.stopped = (f"the selected images stopped growing ({self.selected[-o.patience - 1:]} over the last "
                            f"{o.patience + 1} rounds)")
            self.log.info("pul: stopping before round %d: %s", self.round, self.stopped)
            return
        if self.round > 1:  # fine-tuning restarts from the source model, with a new K-way classifier
            self.models.replace("model", self.build_model())

    def step(self, batch, info: StepInfo) -> Dict[str, torch.Tensor]:
        images, labels = self.images(batch)
        return {"id": self.loss(self.model(images).logits, labels)}

    def stop_reason(self) -> Optional[str]:
        return self.stopped

    def epoch_metrics(self) -> Dict[str, float]:
        metrics, self._metrics = self._metrics, {}
        return {"round": self.round, **metrics}

    def hooks(self) -> List[Hook]:
        return [SelfPacedCurveHook()]

    def consistency_tensors(self) -> Dict[str, torch.Tensor]:
        return {"labels": self.labels} if self.labels is not None else {}

    def state_dict(self) -> Dict[str, Any]:
        return {"round": self.round, "labels": self.labels, "selected": list(self.selected), "stopped": self.stopped,
                "source": dict(self.source)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.round = int(state.get("round", 0))
        self.labels = state.get("labels")
        self.selected = list(state.get("selected", []))
        self.stopped = state.get("stopped")
        self.source = dict(state.get("source", self.source))
