"""Published recipes: every shipped published config resolves to the values docs/recipes.md shows and has a
source for each value that differs from pyreid's defaults; images per BatchNorm derived for 1, 2 and 4
processes; amp / pretrained spellings; `pyreid config show` without torch; `--weights` with a published
config offline."""

import os
import re
import subprocess
import sys

import pytest

from pyreid.training import ConfigError, TrainConfig, recipes, resolve_config
from pyreid.training.config import build_dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(os.path.dirname(HERE), "docs", "recipes.md")

PUBLISHED = ["cluster_contrast_dukemtmcreid", "cluster_contrast_market1501", "cluster_contrast_market1501_ibn",
             "cluster_contrast_msmt17", "cluster_contrast_msmt17_ibn", "cluster_contrast_veri", "ise_market1501", "ise_msmt17", "pul_duke_to_market", "pul_market_to_duke",
             "supervised_dukemtmcreid", "supervised_market1501", "supervised_msmt17"]


def test_the_published_configs_are_the_ones_with_a_recipe():
    assert recipes.published_configs() == PUBLISHED


@pytest.mark.parametrize("name", PUBLISHED)
def test_every_value_off_the_defaults_has_a_source(name):
    recipe = recipes.load_recipe(name)
    missing = [k for k in recipes.not_default(recipe) if k not in recipe.sources]
    assert not missing, f"{name}: values without a source: {missing}"
    assert recipe.title and recipe.repository
    # The file resolves as a training run resolves it (algorithm defaults, file), and validates.
    _, config, options = resolve_config(recipe.algorithm, config=name)
    assert config == recipe.config and options == recipe.options
    config.validate()
    options.validate()


def test_docs_tables_are_the_shipped_files():
    text = open(DOC).read()
    for algorithm, names in recipes.table_names().items():
        pattern = rf"<!-- table: {algorithm} \({recipes.GENERATED}\) -->\n(.*?)\n<!-- end table: {algorithm} -->"
        match = re.search(pattern, text, flags=re.S)
        assert match, f"docs/recipes.md has no generated table for {algorithm}"
        assert match.group(1) == recipes.markdown(names), (
            f"docs/recipes.md's {algorithm} table is out of date: paste `python -m pyreid.training.recipes`")
    assert "## TriNet (triplet_*)" in text


def test_published_values_and_results():
    """The issue's values, spelled out once more: a change to a published config must be deliberate."""
    for name in ("cluster_contrast_market1501", "cluster_contrast_dukemtmcreid", "cluster_contrast_msmt17",
                 "cluster_contrast_veri", "ise_market1501", "ise_msmt17"):
        r = recipes.load_recipe(name)
        assert (r.config.bn_batch, r.config.amp, r.config.pretrained, r.config.batch_size) == (64, "off", "v1", 256)
    cc = {n: recipes.load_recipe(f"cluster_contrast_{n}") for n in ("market1501", "dukemtmcreid", "msmt17", "veri")}
    assert {n: r.options.eps for n, r in cc.items()} == dict.fromkeys(cc, 0.6)
    assert all(r.options.update == "momentum" and r.options.momentum == 0.1 for r in cc.values())
    assert [cc[n].result for n in ("market1501", "dukemtmcreid", "msmt17", "veri")] == [
        "82.1 mAP / 92.3 rank-1", "72.6 mAP / 84.9 rank-1", "27.6 mAP / 56.0 rank-1", ""]
    ise = {n: recipes.load_recipe(f"ise_{n}") for n in ("market1501", "msmt17")}
    assert all(r.config.eval_step == 1 for r in ise.values())
    assert (ise["market1501"].options.update, ise["msmt17"].options.update) == ("hard", "momentum")
    assert [ise[n].result for n in ("market1501", "msmt17")] == ["84.7 mAP / 94.0 rank-1", "35.0 mAP / 64.8 rank-1"]
    sup = recipes.load_recipe("supervised_market1501")
    o = sup.options
    assert (o.center_weight, o.center_lr, o.classifier_init, o.temperature) == (5e-4, 0.5, "random", 1.0)
    assert (sup.config.warmup_factor, sup.config.amp, sup.config.pretrained) == (0.01, "off", "v1")
    assert sup.result.startswith("85.9 mAP / 94.5 rank-1") and "85.7 / 94.1" in sup.result
    assert recipes.load_recipe("supervised_dukemtmcreid").result.startswith("76.4 mAP / 86.4 rank-1")
    assert recipes.load_recipe("supervised_msmt17").result == ""
    pul = recipes.load_recipe("pul_duke_to_market")
    assert pul.sources["options.selection"].differs and pul.sources["options.selection"].published == "any-centre"


@pytest.mark.parametrize("world_size,groups", [(1, 4), (2, 2), (4, 1)])
def test_images_per_batchnorm_give_the_groups_of_each_process(world_size, groups):
    """The published 256 = 4 x 64: one GPU normalises 4 slices, 2 processes of 128 two, 4 of 64 one."""
    import torch

    from pyreid.distributed import DistInfo
    from pyreid.models.batch_norm_groups import GroupedBatchNorm2d
    from pyreid.training.models import ModelSet

    config = TrainConfig(batch_size=256, num_instances=16, bn_batch=64)
    assert config.bn_groups_per_process(world_size) == groups
    models = ModelSet(config, torch.device("cpu"), DistInfo(rank=0, world_size=world_size))
    entry = models.add("net", torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)),
                       optimizer=None)
    bn = entry.network[1]
    assert (isinstance(bn, GroupedBatchNorm2d) and bn.groups == groups) if groups > 1 else \
        type(bn) is torch.nn.BatchNorm2d
    # Without bn_batch: bn_groups as given; bn_batch 0 and bn_groups 1 = each process's whole batch.
    assert TrainConfig(batch_size=256, bn_groups=2).bn_groups_per_process(4) == 2
    assert TrainConfig(batch_size=256).bn_groups_per_process(world_size) == 1


def test_images_per_batchnorm_errors_say_what_to_pass():
    with pytest.raises(ConfigError, match=r"bn_batch 48 does not divide each process's batch of 256 .*e\.g\. 32"):
        TrainConfig(batch_size=256, bn_batch=48).bn_groups_per_process(1)
    with pytest.raises(ConfigError, match=r"bn_batch 64 is more than each process's batch of 32 .*--bn-batch 0 "
                                          r"--sync-bn"):
        TrainConfig(batch_size=64, bn_batch=64).bn_groups_per_process(2)
    with pytest.raises(ConfigError, match="'bn_batch' \\(64\\) and 'bn_groups' \\(4\\) both set"):
        TrainConfig(bn_batch=64, bn_groups=4).validate()
    with pytest.raises(ConfigError, match="'bn_batch' must be >= 0"):
        TrainConfig(bn_batch=-1).validate()
    with pytest.raises(ConfigError, match="exclude each other"):
        TrainConfig(bn_batch=64, sync_bn=True).validate()


def test_amp_and_pretrained_spellings(tmp_path):
    # Older files and checkpoints say amp: true / false and pretrained: true / false.
    assert build_dataclass(TrainConfig, {"amp": True}).amp == "bf16"
    assert build_dataclass(TrainConfig, {"amp": False}).amp == "off"
    assert build_dataclass(TrainConfig, {"amp": "bf16"}).amp == "bf16"
    assert build_dataclass(TrainConfig, {"pretrained": True}).pretrained == "default"
    assert build_dataclass(TrainConfig, {"pretrained": False}).pretrained is None
    assert build_dataclass(TrainConfig, {"pretrained": "none"}).pretrained is None
    with pytest.raises(ConfigError, match="'amp' must be one of bf16, off, got 'fp16'"):
        TrainConfig(amp="fp16").validate()
    with pytest.raises(ConfigError, match="'pretrained' must be one of v1, v2, default, none or an existing weights"):
        TrainConfig(pretrained="v3").validate()
    path = tmp_path / "w.pth"
    path.write_bytes(b"")
    TrainConfig(pretrained=str(path)).validate()
    from pyreid.cli import build_parser

    parser = build_parser()
    for argv, pretrained, amp in ((["--pretrained"], "default", None), (["--pretrained", "v1"], "v1", None),
                                  (["--no-pretrained", "--amp", "off"], False, "off"), (["--amp"], None, "bf16")):
        args = parser.parse_args(["train", "supervised", *argv])
        assert (args.cfg__pretrained, args.cfg__amp) == (pretrained, amp), argv
    # --no-pretrained clears a config's pretrained; --weights wins over it.
    _, config, _ = resolve_config("supervised", config="supervised_market1501", pretrained=False)
    assert config.pretrained is None
    _, config, _ = resolve_config("supervised", config="supervised_market1501", weights="model.pth")
    assert config.starting_weights() == (None, "model.pth")


NO_TORCH = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision") or name == "pyreid._C":
            raise ImportError("importing " + name + " is not allowed here")
sys.meta_path.insert(0, Block())
from pyreid.cli import main
for argv in (["config", "--help"], ["config", "show", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
assert main(["config", "show", "cluster_contrast_msmt17"]) == 0
assert main(["config", "list"]) == 0
print("torch loaded:", "torch" in sys.modules)
"""


def test_config_show_prints_values_and_sources_without_torch():
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "torch loaded: False" in out
    assert re.search(r"^  eps: 0\.6 +# <- README\.md, Training, this data set's DBSCAN command: --eps 0\.6", out,
                     flags=re.M)
    assert re.search(r"^bn_batch: 64 +# <- README\.md, Training: 4 GPUs", out, flags=re.M)
    assert re.search(r"^amp: off +# <- ", out, flags=re.M)
    assert re.search(r"^sgd_momentum: 0\.9 +# \(default\)", out, flags=re.M)
    assert "# published result: 27.6 mAP / 56.0 rank-1" in out
    assert "supervised_market1501  (published recipe)" in out and "\ntriplet_market1501\n" in out


def test_weights_win_over_a_published_pretrained_offline(tmp_path, offline, capsys):
    """`pyreid train` with a published config (pretrained: v1) and --weights: no download is attempted; without
    --weights the error says what to pass."""
    import torch

    from pyreid.cli import main
    from pyreid.data import SynthConfig, generate
    from pyreid.models import build_model

    attempts = offline
    data = tmp_path / "data"
    generate(str(data), SynthConfig(ids_train=6, ids_test=3, cameras=2, images_per_id=4, seed=3))
    weights = tmp_path / "start.pth"
    torch.save(build_model("resnet18").state_dict(), weights)
    small = ["--dataset", "synthetic", "--data-root", str(data), "--arch", "resnet18", "--height", "32", "--width",
             "16", "--batch-size", "8", "--num-instances", "2", "--bn-batch", "0", "--epochs", "1", "--iters", "1",
             "--eval-step", "1", "--workers", "0", "--no-progress", "--no-plots", "--test-batch-size", "32"]
    rc = main(["train", "supervised", "--config", "supervised_market1501", *small, "--weights", str(weights),
               "--out", str(tmp_path / "run")])
    assert rc == 0 and attempts == []
    assert os.path.exists(tmp_path / "run" / "best.pth")
    capsys.readouterr()
    rc = main(["train", "supervised", "--config", "supervised_market1501", *small, "--out", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert rc == 2 and len(attempts) == 1
    assert "IMAGENET1K_V1" in err and "--weights FILE" in err and "--pretrained FILE" in err and \
        "--no-pretrained" in err


@pytest.mark.parametrize("amp,tf32", [("off", True), ("off", False), ("bf16", True)])
def test_precision_sets_tf32_for_a_float32_cuda_run_and_restores_it(amp, tf32):
    """The flags are process-wide: a float32 CUDA run sets them as `tf32` asks and puts them back after."""
    import torch

    from pyreid.training.engine import Engine

    engine = Engine.__new__(Engine)
    engine.config = TrainConfig(amp=amp, tf32=tf32)
    engine.device = torch.device("cuda")  # only the flags are touched: no GPU needed
    engine.amp = amp == "bf16"
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with engine._precision():
        inside = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    assert inside == ((tf32, tf32) if amp == "off" else before)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
