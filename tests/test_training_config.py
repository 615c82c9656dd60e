"""Training configs: layering (defaults < algorithm < file < flags), validation, shipped files, resume rules."""

import dataclasses

import pytest

from pyreid.algorithms import ALGORITHMS
from pyreid.training import ConfigError, TrainConfig, resolve_config, shipped_configs
from pyreid.training.checkpoint import FORMAT, save_atomic
from pyreid.training.config import build_dataclass, find_config, read_config_file


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_layers_flags_win_over_file_over_algorithm_defaults(tmp_path):
    path = _write(tmp_path, "algorithm: triplet\nlr: 1.0e-3\nepochs: 7\noptions:\n  margin: 0.2\n  dropout: 0.1\n")
    cls, config, options = resolve_config("triplet", config=path, options={"dropout": 0.3}, epochs=9)
    assert cls is ALGORITHMS["triplet"]
    assert config.lr == 1e-3 and config.epochs == 9  # file, then flag
    assert config.warmup_epochs == 0.0  # the triplet algorithm's own default, not TrainConfig's 10
    assert options.margin == 0.2 and options.dropout == 0.3
    assert config.algorithm == "triplet"


def test_unknown_keys_list_the_valid_ones(tmp_path):
    path = _write(tmp_path, "learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rate'; valid keys: .*\blr\b"):
        resolve_config("supervised", config=path)
    path = _write(tmp_path, "options:\n  temprature: 0.1\n")
    with pytest.raises(ConfigError, match=r"supervised options: unknown key 'temprature'; valid keys: .*temperature"):
        resolve_config("supervised", config=path)
    with pytest.raises(ConfigError, match="unknown algorithm 'spcl'"):
        resolve_config("spcl")


def test_types_are_checked_and_coerced(tmp_path):
    # YAML 1.1 reads "3.5e-4" (no dot) as a string; ints widen to floats; "none" clears an optional.
    path = _write(tmp_path, "lr: 3.5e-4\nwarmup_epochs: 2\nmilestones: 5\noptions:\n  margin: none\n")
    _, config, options = resolve_config("supervised", config=path)
    assert config.lr == 3.5e-4 and config.warmup_epochs == 2.0 and config.milestones == [5]
    assert options.margin is None
    with pytest.raises(ConfigError, match="'epochs' must be int, got 'ten'"):
        build_dataclass(TrainConfig, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="'amp' must be bool, got 3"):
        build_dataclass(TrainConfig, {"amp": 3})


def test_validation_messages():
    with pytest.raises(ConfigError, match=r"batch_size \(30\) must be a multiple of num_instances \(4\)"):
        TrainConfig(batch_size=30).validate()
    with pytest.raises(ConfigError, match="'arch' must be one of .*resnet50.*, got 'vgg16'"):
        TrainConfig(arch="vgg16").validate()
    with pytest.raises(ConfigError, match="'rerank_distance' must be one of euclidean, sqeuclidean, got 'cosine'"):
        TrainConfig(rerank_distance="cosine").validate()
    with pytest.raises(ConfigError, match="'milestones' must be increasing"):
        TrainConfig(milestones=[70, 40]).validate()
    with pytest.raises(ConfigError, match="'classifier_init' must be class_mean or random"):
        ALGORITHMS["supervised"].Options(classifier_init="zeros").validate()


def test_config_names_algorithm_mismatch_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="is for algorithm 'triplet', not 'supervised'"):
        resolve_config("supervised", config="triplet_market1501")
    with pytest.raises(ConfigError, match="no shipped config of that name; shipped: .*supervised_market1501"):
        find_config("supervised_market")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(_write(tmp_path, "lr: [1, 2\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_config_file(_write(tmp_path, "- 1\n- 2\n"))


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads_and_validates(name):
    values, _ = read_config_file(find_config(name))
    algorithm = values["algorithm"]
    _, config, options = resolve_config(algorithm, config=name)
    config.validate()
    options.validate()


def test_shipped_configs_hold_the_published_settings():
    names = set(shipped_configs())
    for dataset in ("market1501", "dukemtmcreid", "msmt17"):
        assert f"supervised_{dataset}" in names and f"triplet_{dataset}" in names
    assert {"supervised_synthetic_cpu", "triplet_synthetic_cpu"} <= names
    _, c, o = resolve_config("supervised", config="supervised_market1501")
    # Luo et al. 2019: ResNet-50, last stride 1, 16 x 4, Adam 3.5e-4, warm-up 10, x0.1 at 40 and 70, 120 epochs.
    assert (c.arch, c.last_stride, c.batch_size, c.num_instances, c.optimizer, c.lr) == ("resnet50", 1, 64, 4,
                                                                                         "adam", 3.5e-4)
    assert (c.warmup_epochs, c.milestones, c.gamma, c.epochs) == (10.0, [40, 70], 0.1, 120)
    # The published recipe: centre loss on, pyreid's classifier choices off (they live in *_pyreid).
    assert (o.label_smoothing, o.margin, o.temperature, o.classifier_init, o.embedding_dim, o.center_weight) == (
        0.1, 0.3, 1.0, "random", 0, 5e-4)
    _, _, o = resolve_config("supervised", config="supervised_market1501_pyreid")
    assert (o.temperature, o.classifier_init) == (0.1, "class_mean")


def _fake_run(tmp_path, config, options):
    out = tmp_path / "run"
    out.mkdir()
    record = dataclasses.asdict(config)
    record["options"] = dataclasses.asdict(options)
    save_atomic({"format": FORMAT, "version": 1, "algorithm": config.algorithm, "config": record,
                 "model": {}, "epoch": 3}, str(out / "checkpoint.pth"))
    return str(out)


def test_resume_takes_the_checkpoint_config_and_refuses_changes(tmp_path):
    _, config, options = resolve_config("supervised", config="supervised_synthetic_cpu", lr=1e-3)
    out = _fake_run(tmp_path, dataclasses.replace(config, out=str(tmp_path / "run")), options)
    # Only --resume and --out given: everything else comes back from the checkpoint.
    _, resumed, resumed_options = resolve_config("supervised", resume=True, out=out)
    assert resumed.lr == 1e-3 and resumed.arch == "resnet18" and resumed.resume
    assert resumed_options == options
    # How it runs may change ...
    _, resumed, _ = resolve_config("supervised", resume=True, out=out, epochs=20, workers=0)
    assert resumed.epochs == 20 and resumed.workers == 0
    # ... what it computes may not.
    with pytest.raises(ConfigError, match=r"lr: run has 0.001, asked 0.1.*Only .*epochs"):
        resolve_config("supervised", resume=True, out=out, lr=0.1)
    with pytest.raises(ConfigError, match=r"options.temperature: run has 0.1, asked 1.0"):
        resolve_config("supervised", options={"temperature": 1.0}, resume=True, out=out)
    with pytest.raises(ConfigError, match="is a 'supervised' run, not 'triplet'"):
        resolve_config("triplet", resume=True, out=out)


def test_config_keys_have_help_and_flags():
    """Every TrainConfig key and every algorithm option is a documented command-line flag."""
    from pyreid.cli import build_parser

    parser = build_parser()
    for name, cls in ALGORITHMS.items():
        given = set(vars(parser.parse_args(["train", name])))
        assert {f"cfg__{f.name}" for f in dataclasses.fields(TrainConfig) if f.name != "algorithm"} <= given
        assert {f"opt__{f.name}" for f in dataclasses.fields(cls.Options)} <= given
        for f in dataclasses.fields(TrainConfig) + dataclasses.fields(cls.Options):
            assert f.metadata.get("help"), f"{f.name} has no help text"
    args = parser.parse_args(["train", "supervised", "--milestones", "3", "5", "--no-amp", "--margin", "none",
                              "--lr", "0.01"])
    assert (args.cfg__milestones, args.cfg__amp, args.opt__margin, args.cfg__lr) == ([3, 5], False, None, 0.01)
