"""The ``pyreid`` command: ``pyreid <subcommand> ...`` (also ``python -m pyreid``).

Each subcommand registers its own parser in ``_SUBCOMMANDS`` and runs through a
``_run_<name>(args)`` function, so adding ``train``, ``eval`` or ``demo`` is one
``add_<name>_parser`` function and one line in the table below.

Example:
    $ pyreid synth --out data/synthetic --ids-train 100 --ids-test 100 --cameras 6 --seed 0
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, List, Optional


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


# One function per subcommand, each adding its parser; train, eval and demo add a line here.
_SUBCOMMANDS: List[Callable] = [add_synth_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyreid", description="pyreid: fast (unsupervised) person re-identification")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
