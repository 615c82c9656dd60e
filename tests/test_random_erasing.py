"""Random erasing as the published Cluster-Contrast code runs it, against its definition, and the
``random_erasing`` config key that selects it (torchvision's stays the default)."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from pyreid.data.transforms import PublishedRandomErasing, build_transforms

PUBLISHED_FILL = (0.485, 0.456, 0.406)  # Cluster-Contrast's training script passes the ImageNet mean


def _erase_seeded(erase, img, seed):
    torch.manual_seed(seed)
    return erase(img)


def test_fill_values_box_and_untouched_rest():
    img = torch.full((3, 256, 128), -7.0)
    erase = PublishedRandomErasing(p=1.0)
    for seed in range(50):
        out = _erase_seeded(erase, img, seed)
        changed = (out != img).any(dim=0)
        rows, cols = changed.nonzero(as_tuple=True)
        assert rows.numel() > 0, "p = 1 always erases a 256 x 128 image (100 attempts)"
        top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
        h, w = int(bottom - top + 1), int(right - left + 1)
        # One axis-aligned box, strictly smaller than the image in both directions ...
        assert changed.sum() == h * w and h < 256 and w < 128
        # ... holding exactly the published numbers, channel by channel; nothing else changed.
        for c in range(3):
            assert torch.all(out[c, top:bottom + 1, left:right + 1] == torch.tensor(PUBLISHED_FILL[c]))
        assert torch.all(out[:, ~changed] == -7.0)
    assert torch.all(img == -7.0), "the input is not modified"


def test_one_channel_image_gets_the_first_value():
    torch.manual_seed(0)
    out = PublishedRandomErasing(p=1.0)(torch.zeros(1, 64, 32))
    assert out.unique().tolist() == pytest.approx([0.0, 0.485])


def test_probability():
    erase = PublishedRandomErasing()  # p = 0.5
    img = torch.zeros(3, 32, 16)
    erased = sum(bool((_erase_seeded(erase, img, seed) != 0).any()) for seed in range(2000))
    # A box always fits a 32 x 16 image within 100 attempts, so the rate is p; 4.5 sigma.
    assert abs(erased / 2000 - 0.5) < 4.5 * (0.25 / 2000) ** 0.5
    assert not (_erase_seeded(PublishedRandomErasing(p=0.0), img, 0) != 0).any()


def test_area_and_aspect_are_uniform():
    """Single attempts on a 1000 x 1000 image: every draw with area fraction <= 0.28 fits (the
    tallest such box has sqrt(0.28e6 * 3.33) = 966 rows), so below that the accepted boxes show the
    raw draws: area uniform in [0.02, 0.4], aspect ratio h / w uniform (not log-uniform) in
    [0.3, 1 / 0.3]."""
    erase = PublishedRandomErasing(p=1.0, attempts=1)
    torch.manual_seed(1234)
    boxes = [erase.draw_box(1000, 1000) for _ in range(20000)]
    fitted = np.array([(h * w / 1e6, h / w) for _, _, h, w in filter(None, boxes)])
    low = fitted[fitted[:, 0] <= 0.28]
    # The share of draws below 0.28 is (0.28 - 0.02) / (0.4 - 0.02) of all draws, fitted or not.
    expected = (0.28 - 0.02) / 0.38
    assert abs(len(low) / 20000 - expected) < 4.5 * (expected * (1 - expected) / 20000) ** 0.5
    # Rounding h and w to integers moves the realised values by < 0.3 %: far below what the KS test sees.
    assert stats.kstest(low[:, 0], stats.uniform(0.02, 0.26).cdf).pvalue > 1e-3
    assert stats.kstest(low[:, 1], stats.uniform(0.3, 1 / 0.3 - 0.3).cdf).pvalue > 1e-3
    log_uniform = stats.loguniform(0.3, 1 / 0.3)  # torchvision's aspect draw, which this is not
    assert stats.kstest(low[:, 1], log_uniform.cdf).pvalue < 1e-6


def test_box_position_is_uniform_over_every_place():
    erase = PublishedRandomErasing(p=1.0, area=(0.25, 0.25), min_aspect=1.0)  # always a 2 x 2 box in 4 x 4
    torch.manual_seed(0)
    tops, lefts = zip(*[erase.draw_box(4, 4)[:2] for _ in range(3000)])
    for placed in (tops, lefts):
        counts = np.bincount(placed, minlength=3)
        assert len(counts) == 3  # 0, 1 and 2: both ends reached
        assert stats.chisquare(counts).pvalue > 1e-3


def test_gives_up_after_the_attempts():
    # Area fraction >= 0.9 with aspect 1: a 1 x 1 box on a 1 x 1 image never fits strictly inside.
    erase = PublishedRandomErasing(p=1.0, area=(0.9, 1.0), min_aspect=1.0)
    torch.manual_seed(0)
    assert erase.draw_box(1, 1) is None
    img = torch.randn(3, 1, 1)
    assert torch.equal(erase(img), img)


def test_bad_arguments():
    with pytest.raises(ValueError, match="p must be in"):
        PublishedRandomErasing(p=1.5)
    with pytest.raises(ValueError, match="area"):
        PublishedRandomErasing(area=(0.5, 0.1))
    with pytest.raises(ValueError, match="min_aspect"):
        PublishedRandomErasing(min_aspect=2.0)
    with pytest.raises(ValueError, match="C x H x W"):
        PublishedRandomErasing(p=1.0)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="erasing must be one of"):
        build_transforms(64, 32, erasing="cutout")


def test_build_transforms_selects_the_eraser():
    published = build_transforms(64, 32, train=True, erasing="published")
    assert isinstance(published.transforms[-1], PublishedRandomErasing)
    default = build_transforms(64, 32, train=True)
    assert type(default.transforms[-1]).__name__ == "RandomErasing"  # torchvision's, fill 0
    assert default.transforms[-1].value == 0
    img = Image.fromarray(np.full((64, 32, 3), 200, dtype=np.uint8))
    no_flip_pad = build_transforms(64, 32, train=True, erasing="published", pad=0, flip_prob=0, erasing_prob=1.0)
    torch.manual_seed(3)
    out = no_flip_pad(img)
    values = {round(v, 4) for v in out[0].flatten().tolist()}
    assert round(PUBLISHED_FILL[0], 4) in values and len(values) == 2


def test_config_key_reaches_the_loader(tmp_path):
    from pyreid.training.config import ConfigError
    from pyreid.training.run import resolve_config

    _, config, _ = resolve_config("cluster-contrast", config="cluster_contrast_market1501")
    assert config.random_erasing == "published"
    _, config, _ = resolve_config("supervised", config="supervised_synthetic_cpu")
    assert config.random_erasing == "torchvision"
    with pytest.raises(ConfigError, match="random_erasing"):
        resolve_config("supervised", config="supervised_synthetic_cpu", random_erasing="zeros")[1].validate()
