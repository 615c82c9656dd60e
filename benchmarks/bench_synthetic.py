"""The synthetic pedestrian generator's throughput, writing JPEGs to disk.

    python -m pytest benchmarks/bench_synthetic.py --benchmark-only

Goal (issue 6): a few thousand images in under a minute on one core. The
benchmark writes the default layout at a reduced size (20 + 20 identities x
12 images + junk/distractors = 520 images) so a round stays short; the
images per second it reports (extra_info) scale linearly to the default
2,496-image set, since every image is rendered independently.
"""

import shutil
import tempfile

import pytest

from pyreid.data.synthetic import SynthConfig, generate, num_images


@pytest.mark.parametrize("size", [(128, 64), (256, 128)])
def test_synth_throughput(benchmark, size):
    height, width = size
    config = SynthConfig(ids_train=20, ids_test=20, height=height, width=width)
    benchmark.group = "synth"
    benchmark.extra_info["images"] = num_images(config)
    out = tempfile.mkdtemp()
    try:
        benchmark.pedantic(lambda: generate(out, config, overwrite=True), rounds=3, iterations=1)
    finally:
        shutil.rmtree(out)
    median = benchmark.stats.stats.median
    benchmark.extra_info["images_per_s"] = round(num_images(config) / median, 1)
    benchmark.extra_info["default_set_s"] = round(num_images(SynthConfig()) / (num_images(config) / median), 1)
