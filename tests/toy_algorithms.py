"""A toy algorithm with rounds and a freeze schedule, and a runner for it (tests run it in subprocesses).

``RoundsAndFreezing`` trains in rounds of two epochs: each round starts from a
model built anew from the config (``ModelSet.replace``, as PUL restarts from
the source model), trains only the new layers in its first epoch (the backbone
frozen, as two-stepped fine-tuning) and everything in its second.

    python tests/toy_algorithms.py DATA OUT [--resume] [--kill-at EPOCH,ITERATION] [--check-ranks]

runs it (under torchrun too); ``--kill-at`` sends the process SIGKILL just
before that step, as a crash would.
"""

import argparse
import os
import signal
import sys
from dataclasses import dataclass

from pyreid import distributed
from pyreid.losses import CrossEntropyLoss
from pyreid.training import Algorithm, Engine, TrainConfig
from pyreid.training.config import config_field


@dataclass
class RoundsOptions:
    round_epochs: int = config_field("epochs per round", default=2)


def checksum(params) -> float:
    return float(sum(p.detach().double().sum() for p in params))


class RoundsAndFreezing(Algorithm):
    name = "rounds"
    Options = RoundsOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.round = 1
        self.loss = CrossEntropyLoss(0.1)
        kill_at = os.environ.get("TOY_KILL_AT")  # "EPOCH,ITERATION": crash just before that step
        self.kill_at = tuple(int(v) for v in kill_at.split(",")) if kill_at else None

    def build_model(self):
        return self.model_from_config(num_classes=self.dataset.num_train_pids)

    def before_epoch(self, epoch):
        round_epoch = (epoch - 1) % self.options.round_epochs
        if round_epoch == 0 and epoch > 1:
            self.round += 1
            self.models.replace("model", self.build_model())
        if round_epoch == 0:
            self.models.freeze("model", ["backbone."])
        else:
            self.models.unfreeze("model")
        return self.train_loader(self.dataset.train, epoch)

    def step(self, batch, info):
        if self.kill_at == (info.epoch, info.iteration):
            os.kill(os.getpid(), signal.SIGKILL)
        images, pids = self.images(batch)
        return {"id": self.loss(self.model(images).logits, pids)}

    def epoch_metrics(self):
        backbone = [p for n, p in self.network.named_parameters() if n.startswith("backbone.")]
        return {"round": self.round, "frozen": len(self.models["model"].frozen),
                "backbone_checksum": checksum(backbone), "classifier_checksum": checksum(self.network.classifier.parameters())}

    def state_dict(self):
        return {"round": self.round}

    def load_state_dict(self, state):
        self.round = int(state.get("round", 1))


def config(data, out, **kw) -> TrainConfig:
    base = dict(dataset="synthetic", data_root=data, arch="resnet18", height=128, width=64, batch_size=8,
                num_instances=2, epochs=4, iters=2, eval_step=2, workers=0, test_batch_size=32, progress=False,
                plots=False, out=out, warmup_epochs=0.0, seed=5, optimizer="sgd", lr=0.01)
    base.update(kw)
    return TrainConfig(**base)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--check-ranks", action="store_true")
    parser.add_argument("--kill-at", help="EPOCH,ITERATION: SIGKILL just before that step")
    args = parser.parse_args(argv)
    if args.kill_at:
        os.environ["TOY_KILL_AT"] = args.kill_at
    info = distributed.init_from_env(use_cuda=False)
    try:
        Engine(config(args.data, args.out, resume=args.resume, check_ranks=args.check_ranks), RoundsOptions(),
               RoundsAndFreezing, info).run()
    finally:
        if info.distributed:
            distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
