"""The ``pyreid`` command: ``pyreid <subcommand> ...`` (also ``python -m pyreid``).

Each subcommand registers its own parser in ``_SUBCOMMANDS`` and runs through a
``_run_<name>(args)`` function: adding one is an ``add_<name>_parser`` function
and one line in the table below.

Examples:
    $ pyreid synth --out data/synthetic --ids-train 100 --ids-test 100 --cameras 6 --seed 0
    $ pyreid train supervised --config supervised_synthetic_cpu --data-root data/synthetic --out runs/sup
    $ pyreid train supervised --out runs/sup --resume
    $ pyreid eval --checkpoint runs/sup/best.pth --rerank --plots
    $ pyreid extract --checkpoint runs/sup/best.pth --images photos/ --out feats.npz
    $ pyreid search --checkpoint runs/sup/best.pth --query q.jpg --gallery photos/ --topk 10
    $ pyreid export --checkpoint runs/sup/best.pth --format onnx --out model.onnx
    $ pyreid config show cluster_contrast_market1501
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import typing
from typing import Callable, List, Optional

# Errors a user can act on: printed as one line, without a traceback.
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError)


def add_synth_parser(subparsers) -> None:
    from pyreid.data.synthetic import SynthConfig

    d = SynthConfig()
    p = subparsers.add_parser(
        "synth",
        help="write the synthetic pedestrian data set (Market-1501 layout)",
        description="Draw pedestrians procedurally and write them as bounding_box_train/, query/ and "
        "bounding_box_test/ with Market-1501 names; read them back with build_dataset('synthetic', OUT).",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ids-train", type=int, default=d.ids_train, help=f"training identities (default {d.ids_train})")
    p.add_argument("--ids-test", type=int, default=d.ids_test, help=f"test identities (default {d.ids_test})")
    p.add_argument("--cameras", type=int, default=d.cameras, help=f"cameras (default {d.cameras})")
    p.add_argument("--images-per-id", type=int, default=d.images_per_id,
                   help=f"images per identity (default {d.images_per_id})")
    p.add_argument("--size", choices=["128x64", "256x128"], default=f"{d.height}x{d.width}",
                   help="image height x width (default %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic data set already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(run=_run_synth)


def _run_synth(args) -> int:
    from pyreid.data.datasets import build_dataset
    from pyreid.data.synthetic import SynthConfig, generate

    height, width = (int(v) for v in args.size.split("x"))
    config = SynthConfig(ids_train=args.ids_train, ids_test=args.ids_test, cameras=args.cameras,
                         images_per_id=args.images_per_id, height=height, width=width, seed=args.seed)
    start = time.perf_counter()
    try:
        counts = generate(args.out, config, overwrite=args.overwrite, progress=not args.quiet)
    except (ValueError, FileExistsError) as e:
        print(f"pyreid synth: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"wrote {sum(counts.values())} images to {args.out} in {time.perf_counter() - start:.1f} s")
        build_dataset("synthetic", args.out).print_summary()
    return 0


def _flag_type(tp):
    """argparse keyword arguments for a config field of type ``tp``."""
    from pyreid.training.config import unwrap_optional

    base, optional = unwrap_optional(tp)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) in (list, List):
        (item,) = typing.get_args(base)
        return {"nargs": "+", "type": item, "metavar": item.__name__.upper()}
    if optional:  # "none" is a value: e.g. --margin none for the soft margin
        def parse(text, _base=base):
            return None if text.lower() in ("none", "null") else _base(text)

        parse.__name__ = base.__name__
        return {"type": parse, "metavar": f"{base.__name__.upper()}|none"}
    return {"type": base, "metavar": base.__name__.upper()}


def _add_dataclass_flags(parser, cls, prefix: str, skip=(), defaults=None) -> None:
    """One ``--flag`` per field of the config dataclass ``cls``, defaulting to "not given"; the help
    shows ``defaults[name]`` where given (what the run uses), else the field's default."""
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = defaults.get(f.name, default)
        shown = "none" if default is None else " ".join(map(str, default)) if isinstance(default, list) else default
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata.get('help', '')} (default: {shown})"
        if "flag" in f.metadata:  # a value, or the bare flag for its usual value, and --no-NAME for off
            kwargs = dict(f.metadata["flag"])
            off = kwargs.pop("off_help", f"the same as {flag} false")
            group = parser.add_mutually_exclusive_group()
            group.add_argument(flag, dest=prefix + f.name, default=None, help=text, **kwargs)
            group.add_argument("--no-" + flag[2:], dest=prefix + f.name, action="store_const", const=False, help=off)
            continue
        parser.add_argument(flag, dest=prefix + f.name, default=None, help=text, **_flag_type(hints[f.name]))


def add_train_parser(subparsers) -> None:
    from pyreid.algorithms import SPECS
    from pyreid.training.config import TrainConfig, shipped_configs

    names = ", ".join(sorted(SPECS))
    p = subparsers.add_parser(
        "train", help=f"train a re-ID model ({names})",
        description="Train a re-ID model. Settings come from the defaults, then --config (a shipped config's name "
                    "or a YAML file), then the flags. The run writes metrics.json, checkpoint.pth (every epoch), "
                    "best.pth, train.log and PNG plots to --out. Algorithms: "
                    + "; ".join(f"{n} ({SPECS[n].summary})" for n in sorted(SPECS))
                    + f". Shipped configs: {', '.join(shipped_configs())}.")
    algos = p.add_subparsers(dest="algorithm", metavar="ALGO", title="algorithms")
    algos.required = True
    for name in sorted(SPECS):
        spec = SPECS[name]
        a = algos.add_parser(name, help=spec.summary, description=spec.description(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        a.add_argument("--config", help="a shipped config's name (" + ", ".join(
            c for c in shipped_configs() if c.startswith(name.replace("-", "_"))) + ") or a YAML file")
        _add_dataclass_flags(a.add_argument_group("run settings"), TrainConfig, "cfg__", skip=("algorithm",),
                             defaults=spec.defaults)
        _add_dataclass_flags(a.add_argument_group(f"{name} options"), spec.options, "opt__")
        a.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    p.set_defaults(run=_run_train)


def _user_error(command: str, e: BaseException, verbose: bool) -> int:
    if verbose:
        raise e
    print(f"pyreid {command}: error: {e}", file=sys.stderr)
    return 2


def _run_train(args) -> int:
    from pyreid.models.backbone import PretrainedWeightsUnavailable
    from pyreid.training import CheckpointError, NonFiniteLossError, train

    values = vars(args)
    overrides = {k[5:]: v for k, v in values.items() if k.startswith("cfg__") and v is not None}
    options = {k[5:]: v for k, v in values.items() if k.startswith("opt__") and v is not None}
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        train(args.algorithm, config=args.config, options=options, **overrides)
    # OSError: an image that cannot be read with --on-bad-image fail (the message names it)
    except (CheckpointError, NonFiniteLossError, PretrainedWeightsUnavailable, OSError, *_USER_ERRORS) as e:
        return _user_error("train", e, args.verbose)
    except KeyboardInterrupt:
        print("pyreid train: interrupted; the last finished epoch's checkpoint is kept (continue with --resume)",
              file=sys.stderr)
        return 130
    return 0


def add_eval_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate a saved model (mAP, rank-1/5/10, mINP)",
        description="Score a pyreid checkpoint (checkpoint.pth or best.pth) on the query/gallery split of the "
                    "data set it was trained on (or --dataset/--data-root). Prints the scores and writes "
                    "eval[_rerank][_flip].json (and with --plots the CMC curve and ranked lists) to --out.")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pth or best.pth of a pyreid run")
    p.add_argument("--dataset", help="data set name (default: the run's)")
    p.add_argument("--data-root", help="data set folder (default: the run's)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    p.add_argument("--rerank-distance", choices=("euclidean", "sqeuclidean"), default=None,
                   help="with --rerank: the distances the original re-ranking is fed; euclidean (the paper, "
                        "default) or sqeuclidean (what torchreid's engine and Cluster-Contrast's evaluator "
                        "pass: reproduces their re-ranked scores)")
    p.add_argument("--flip", action="store_true", help="average each image's features with its mirror's")
    p.add_argument("--plots", action="store_true", help="write the CMC curve and ranked lists as PNG")
    p.add_argument("--out", help="output folder (default: the checkpoint's folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=128, help="images per extraction batch (default: 128)")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="data loader workers (default: min(4, CPU cores) = %(default)s)")
    p.add_argument("--camera-pattern", metavar="REGEX",
                   help="folder/list data sets: regular expression finding the camera in each image's path "
                        "(group 1 or the match); default: a c<number> token in the file name, else one camera per "
                        "image (no same-camera filtering)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    p.set_defaults(run=_run_eval)


def _default_workers() -> int:
    # More loader processes than cores only adds start-up time (and a DataLoader warning).
    return min(4, os.cpu_count() or 1)


def _run_eval(args) -> int:
    from pyreid.training import CheckpointError
    from pyreid.training.evaluate import evaluate_checkpoint

    if args.rerank_distance is not None and not args.rerank:
        print("pyreid eval: --rerank-distance needs --rerank", file=sys.stderr)
        return 2
    try:
        r = evaluate_checkpoint(args.checkpoint, dataset=args.dataset, data_root=args.data_root, rerank=args.rerank,
                                flip=args.flip, plots=args.plots, out=args.out, device=args.device,
                                batch_size=args.batch_size, workers=args.workers, progress=not args.no_progress,
                                rerank_distance=args.rerank_distance or "euclidean",
                                camera_pattern=args.camera_pattern)
    except (CheckpointError, *_USER_ERRORS) as e:
        return _user_error("eval", e, args.verbose)
    print(f"{r['dataset']} ({r['num_query']} query, {r['num_gallery']} gallery), epoch {r['epoch']}"
          f"{', re-ranked (' + r['rerank_distance'] + ')' if r['rerank'] else ''}{', flip' if r['flip'] else ''}:")
    print("  " + "  ".join(f"{k} {100 * r[k]:.1f}%" for k in ("mAP", "rank1", "rank5", "rank10", "mINP")))
    for split, paths in r.get("skipped_images", {}).items():
        print(f"  skipped {len(paths)} {split} image(s) that cannot be read: {', '.join(paths[:5])}"
              f"{' ...' if len(paths) > 5 else ''}")
    print(f"  written: {r['written']}")
    return 0


def add_demo_parser(subparsers) -> None:
    from pyreid import demo

    p = subparsers.add_parser("demo", help="adapt a source model to an unlabelled target (synthetic, minutes)",
                              description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_arguments(p)
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> int:
    from pyreid import demo
    from pyreid.training import CheckpointError, NonFiniteLossError

    try:
        return demo.run(args)
    except (CheckpointError, NonFiniteLossError, *_USER_ERRORS) as e:
        return _user_error("demo", e, args.verbose)


def _add_inference_flags(p, batch_size: int = 64) -> None:
    """Flags that extract and search share."""
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"images per batch (default: {batch_size})")
    p.add_argument("--workers", type=int, default=_default_workers(),
                   help="data loader workers (default: min(4, CPU cores) = %(default)s)")
    p.add_argument("--flip", action="store_true", help="average each image's features with its mirror's")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")


def _inference_logging(args) -> None:
    # Warnings (skipped images, cache problems) reach the console; tracebacks only with --verbose.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")


def add_extract_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "extract", help="features of a folder, image list or data set split, saved as .npz/.pt/.npy",
        description="Extract unit-length features with a trained model (best.pth or checkpoint.pth): of every "
                    "image below a folder, of a list file (one path per line) or of a data set split (then with "
                    "pids and camids). Rows follow the input order; unreadable images are skipped and named. "
                    "The format follows --out: .npz (features, paths[, pids, camids, splits], failed), .pt (the "
                    "same in a dict) or .npy (features; paths in <stem>_paths.txt).")
    p.add_argument("--checkpoint", required=True, help="best.pth or checkpoint.pth of a pyreid run")
    p.add_argument("--images", metavar="DIR_OR_LIST", help="a folder (searched recursively), a list file or an image")
    p.add_argument("--dataset", help="instead of --images: a data set name (market1501, veri, folder, list, ...)")
    p.add_argument("--data-root", help="with --dataset: its folder")
    p.add_argument("--split", default="all", choices=("query", "gallery", "train", "test", "all"),
                   help="with --dataset: which images (test = query + gallery; default: all)")
    p.add_argument("--camera-pattern", metavar="REGEX", help="with --dataset folder/list: see `pyreid eval --help`")
    p.add_argument("--out", required=True, help="features file: .npz, .pt or .npy")
    _add_inference_flags(p)
    p.set_defaults(run=_run_extract)


def _run_extract(args) -> int:
    from pyreid.extract import extract_to_file
    from pyreid.training.checkpoint import CheckpointError

    _inference_logging(args)
    try:
        r = extract_to_file(args.checkpoint, args.out, images=args.images, dataset=args.dataset,
                            data_root=args.data_root, split=args.split, camera_pattern=args.camera_pattern,
                            device=args.device, batch_size=args.batch_size, workers=args.workers, flip=args.flip,
                            progress=not args.no_progress)
    except (CheckpointError, OSError, *_USER_ERRORS) as e:
        return _user_error("extract", e, args.verbose)
    skipped = f"; skipped {r['num_failed']} unreadable: " + ", ".join(p for p, _ in r["failed"][:5]) + (
        " ..." if r["num_failed"] > 5 else "") if r["num_failed"] else ""
    print(f"{r['num_images']} images x {r['feature_dim']} features on {r['device']}{skipped}")
    print(f"  written: {', '.join(r['written'])}")
    return 0


def add_search_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="rank a gallery folder for query images (printed, JSON, ranked-list PNG)",
        description="Find each query image's nearest gallery images with a trained model: Euclidean distance of "
                    "unit-length features (the ranking `pyreid eval` scores) or k-reciprocal re-ranking. Prints "
                    "the top-k, writes OUT/search.json and OUT/ranked_lists.png. The gallery's features are "
                    "cached in GALLERY/.pyreid_cache/ (keyed by checkpoint, file list and modification times), so "
                    "searching the same gallery again does not extract it again.")
    p.add_argument("--checkpoint", required=True, help="best.pth or checkpoint.pth of a pyreid run")
    p.add_argument("--query", required=True, metavar="IMG_OR_DIR", help="an image, a folder or a list file")
    p.add_argument("--gallery", required=True, metavar="DIR", help="a folder (searched recursively) or a list file")
    p.add_argument("--topk", type=int, default=10, help="matches per query (default: 10)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (Zhong et al. 2017)")
    p.add_argument("--out", default="search_results", help="folder for search.json and ranked_lists.png "
                                                           "(default: %(default)s)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the gallery feature cache")
    _add_inference_flags(p)
    p.set_defaults(run=_run_search)


def _run_search(args) -> int:
    from pyreid.search import search
    from pyreid.training.checkpoint import CheckpointError

    _inference_logging(args)
    try:
        r = search(args.checkpoint, args.query, args.gallery, topk=args.topk, rerank=args.rerank, out=args.out,
                   cache=not args.no_cache, device=args.device, batch_size=args.batch_size, workers=args.workers,
                   flip=args.flip, progress=not args.no_progress)
    except (CheckpointError, OSError, *_USER_ERRORS) as e:
        return _user_error("search", e, args.verbose)
    print(f"{len(r.query_paths)} queries, {len(r.gallery_paths)} gallery images"
          f"{' (features from the cache)' if r.gallery_cached else ''}"
          f"{', re-ranked' if args.rerank else ''}:")
    for query, matches in zip(r.query_paths, r.matches):
        print(query)
        for rank, (path, distance) in enumerate(matches, start=1):
            print(f"  {rank:3d}. {distance:.4f}  {path}")
    if r.skipped:
        print(f"skipped {len(r.skipped)} unreadable images: " + ", ".join(p for p, _ in r.skipped[:5]))
    print(f"written: {', '.join(r.written)}")
    return 0


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX or TorchScript, checked against PyTorch",
        description="Export the model of best.pth or checkpoint.pth: normalised B x 3 x H x W images (the run's "
                    "size, ImageNet mean/std) to unit-length features, with a dynamic batch dimension. The "
                    "export is run (onnxruntime or torch.jit) next to the PyTorch model on real images (--images, "
                    "else the run's data set, else a drawn synthetic set) and kept only if the features agree "
                    "within --atol and different images give different outputs. ONNX needs pip install "
                    "\"pyreid[export]\" (onnx, onnxscript, onnxruntime).")
    p.add_argument("--checkpoint", required=True, help="best.pth or checkpoint.pth of a pyreid run")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx or torchscript")
    p.add_argument("--out", required=True, help="file to write (model.onnx, model.pt)")
    p.add_argument("--images", metavar="DIR_OR_LIST", help="images to check the export on")
    p.add_argument("--atol", type=float, default=1e-4, help="largest feature difference allowed (default: 1e-4)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--verbose", action="store_true", help="exporter output and the traceback of an error")
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from pyreid.export import ExportError, export_model
    from pyreid.training.checkpoint import CheckpointError

    _inference_logging(args)
    try:
        r = export_model(args.checkpoint, args.format, args.out, images=args.images, atol=args.atol,
                         opset=args.opset)
    except (CheckpointError, ExportError, OSError, *_USER_ERRORS) as e:
        return _user_error("export", e, args.verbose)
    print(f"exported {args.checkpoint} as {r['format']} to {r['out']}: input B x 3 x {r['height']} x {r['width']} "
          f"(normalised), output B x {r['feature_dim']} unit-length features")
    print(f"  checked on {r['checked_on']}: largest difference from PyTorch {r['max_abs_diff']:.2e}")
    return 0


def add_config_parser(subparsers) -> None:
    from pyreid.training.config import shipped_configs

    p = subparsers.add_parser(
        "config", help="show a shipped config resolved, with the source of every published value",
        description="pyreid config show NAME prints the config NAME (a shipped config or a YAML file) as "
                    "`pyreid train` resolves it before command-line flags: every run setting and option, and for a "
                    "published recipe the source (file of the public code, or the paper) of each value that "
                    "differs from pyreid's defaults, the published result of exactly that setting and the known "
                    "differences. pyreid config list names the shipped configs. Shipped: "
                    + ", ".join(shipped_configs()) + ".")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="print a config resolved, with its sources")
    show.add_argument("name", metavar="NAME", help="a shipped config's name or a YAML file")
    actions.add_parser("list", help="name the shipped configs (published recipes marked)")
    p.add_argument("--verbose", action="store_true", help="print the traceback of an error")
    p.set_defaults(run=_run_config)


def _run_config(args) -> int:
    from pyreid.training import recipes

    try:
        if args.action == "show":
            print(recipes.show(args.name))
        else:
            published = set(recipes.published_configs())
            for name in recipes.shipped_configs():
                print(f"{name}{'  (published recipe)' if name in published else ''}")
    except _USER_ERRORS as e:
        return _user_error("config", e, args.verbose)
    return 0


# One function per subcommand, each adding its parser.
_SUBCOMMANDS: List[Callable] = [add_train_parser, add_eval_parser, add_demo_parser, add_synth_parser,
                                add_extract_parser, add_search_parser, add_export_parser, add_config_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyreid", description="pyreid: fast (unsupervised) person re-identification")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def _unknown_flags(args, extra: List[str]) -> str:
    """argparse's message for arguments no parser knows, naming the algorithms whose options they are."""
    text = f"unrecognized arguments: {' '.join(extra)}"
    if getattr(args, "command", None) != "train":
        return text
    from pyreid.algorithms import option_owners

    notes = []
    for flag in (a.split("=")[0] for a in extra if a.startswith("--")):
        owners = [n for n in option_owners(flag) if n != args.algorithm]
        if owners:
            notes.append(f"{flag} is an option of {' and '.join(owners)}, not of {args.algorithm}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(_unknown_flags(args, extra))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
