"""A procedurally drawn pedestrian data set in the Market-1501 layout.

Real re-ID data sets cannot be downloaded on every machine, so pyreid embeds
a generator: ``pyreid synth --out DIR`` (or :func:`generate`) draws
pedestrians with numpy and PIL and writes them as ``bounding_box_train/``,
``query/`` and ``bounding_box_test/`` with Market-1501 file names, so
``build_dataset("synthetic", DIR)`` (or ``"market1501"``) reads them.

What makes it a re-ID problem rather than a colour lookup:

* identities are combinations of a *small* palette (top and bottom colour,
  pattern, build, hair, skin, bag, hat), so many identities share their top or
  their bottom colour and only the combination tells them apart;
* every image of an identity has its own pose (stride, arm swing, front / back /
  side view), position, scale and lighting;
* every camera has its own colour cast, brightness and contrast, background
  (colour and texture), blur, framing and occluders, so two people seen by
  the same camera can look more alike in raw pixels than one person seen by
  two cameras.

Everything an image depends on is drawn from generators seeded by
``(seed, what, ids...)``, so an image is the same whichever order (or
process) renders it: the output is byte-identical for a seed.

Example:
    >>> from pyreid.data.synthetic import SynthConfig, generate
    >>> summary = generate("/tmp/synth", SynthConfig(ids_train=4, ids_test=4, cameras=3, images_per_id=6))
    >>> sorted(summary)
    ['bounding_box_test', 'bounding_box_train', 'query']
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "SynthConfig",
    "SynthImage",
    "generate",
    "iter_images",
    "num_images",
    "make_identity",
    "make_camera",
    "render",
    "MARKER_FILE",
]

# Written next to the split folders; build_dataset uses it to tell a synthetic
# tree from a real Market-1501 one when both sit under the same parent.
MARKER_FILE = "synthetic.json"

SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")

# Clothing colours. Deliberately few, and dark ones drawn more often (as in
# street data), so identities collide on single attributes all the time.
_PALETTE = np.array(
    [
        (25, 25, 28),  # black
        (60, 60, 65),  # charcoal
        (128, 128, 128),  # grey
        (230, 230, 225),  # white
        (30, 40, 90),  # navy
        (60, 100, 170),  # blue
        (150, 30, 35),  # red
        (40, 100, 50),  # green
        (190, 170, 120),  # khaki
        (100, 65, 40),  # brown
        (215, 190, 50),  # yellow
        (220, 140, 160),  # pink
    ],
    dtype=np.float64,
)
_PALETTE_WEIGHTS = np.array([5, 3, 3, 3, 3, 2, 1.5, 1.2, 1.5, 1.5, 0.8, 0.8])
_PALETTE_WEIGHTS = _PALETTE_WEIGHTS / _PALETTE_WEIGHTS.sum()

_SKIN = np.array([(240, 200, 170), (215, 165, 125), (165, 115, 80), (100, 70, 50)], dtype=np.float64)
_HAIR = np.array([(20, 15, 10), (80, 50, 25), (200, 170, 100), (150, 150, 150)], dtype=np.float64)

_PATTERNS = ("solid", "solid", "hstripes", "vstripes", "checks")
_BACKGROUNDS = ("gradient", "tiles", "columns", "blotches")


class Identity(NamedTuple):
    top: np.ndarray  # RGB float
    top_second: np.ndarray  # pattern colour
    pattern: str
    long_sleeves: bool
    bottom: np.ndarray
    bottom_kind: str  # trousers | shorts | skirt
    shoes: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    height: float  # fraction of the image height at camera scale 1
    width: float  # shoulder width factor around 1
    bag: str  # none | backpack | shoulder
    bag_colour: np.ndarray
    hat: Optional[np.ndarray]


class Camera(NamedTuple):
    gains: np.ndarray  # per-channel colour cast
    brightness: float
    contrast: float
    background: str
    bg_colour: np.ndarray
    bg_second: np.ndarray
    floor_colour: np.ndarray
    horizon: float  # floor line, fraction of the height
    blur: float  # Gaussian radius at 128 px height
    scale: float  # mean person height multiplier
    offset: float  # mean horizontal offset of the detection box, fraction of the width
    occlusion: float  # probability of an occluder
    noise: float


@dataclass
class SynthConfig:
    """What :func:`generate` writes. Defaults give 2,400 identity images + junk and distractors."""

    ids_train: int = 100
    ids_test: int = 100
    cameras: int = 6
    images_per_id: int = 12
    height: int = 128
    width: int = 64
    seed: int = 0
    junk_fraction: float = 0.03  # pid -1 images, as a fraction of the test identities' images
    distractor_fraction: float = 0.05  # pid 0000 images, likewise
    jpeg_quality: int = 92

    def validate(self) -> None:
        if self.ids_train < 1 or self.ids_test < 1:
            raise ValueError(f"synth: need at least 1 train and 1 test identity, got {self.ids_train}, {self.ids_test}")
        if self.ids_train + self.ids_test > 9999:
            raise ValueError("synth: at most 9999 identities fit the 4-digit Market-1501 names")
        if self.cameras < 2:
            raise ValueError(f"synth: need at least 2 cameras (re-ID matches across cameras), got {self.cameras}")
        if self.images_per_id < 4:
            raise ValueError(
                f"synth: need at least 4 images per identity (2 cameras x (query + gallery)), got {self.images_per_id}"
            )
        if (self.height, self.width) not in ((128, 64), (256, 128)):
            raise ValueError(f"synth: size must be 128x64 or 256x128, got {self.height}x{self.width}")
        if not (0 <= self.junk_fraction <= 1 and 0 <= self.distractor_fraction <= 1):
            raise ValueError("synth: junk_fraction and distractor_fraction must be in [0, 1]")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _colour(rng: np.random.Generator, spread: float = 12.0) -> np.ndarray:
    """A palette colour with a small per-identity shade, so equal names are not equal pixels."""
    base = _PALETTE[rng.choice(len(_PALETTE), p=_PALETTE_WEIGHTS)]
    return np.clip(base + rng.normal(0, spread, 3), 0, 255)


def make_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's appearance."""
    top = _colour(rng)
    top_second = _colour(rng)
    bottom = _colour(rng)
    return Identity(
        top=top,
        top_second=top_second,
        pattern=_PATTERNS[rng.integers(len(_PATTERNS))],
        long_sleeves=bool(rng.random() < 0.6),
        bottom=bottom,
        bottom_kind=("trousers", "trousers", "trousers", "shorts", "skirt")[rng.integers(5)],
        shoes=_PALETTE[rng.choice([0, 1, 3, 9])],
        skin=_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 6, 3),
        hair=_HAIR[rng.choice(len(_HAIR), p=[0.5, 0.3, 0.12, 0.08])],
        long_hair=bool(rng.random() < 0.35),
        height=float(rng.uniform(0.80, 0.94)),
        width=float(rng.uniform(0.8, 1.25)),
        bag=("none", "none", "backpack", "shoulder")[rng.integers(4)],
        bag_colour=_colour(rng),
        hat=_colour(rng) if rng.random() < 0.2 else None,
    )


def make_camera(rng: np.random.Generator) -> Camera:
    """Draw one camera's viewing conditions."""
    bg = rng.uniform(80, 180, 3)
    return Camera(
        gains=np.clip(1 + rng.normal(0, 0.08, 3), 0.8, 1.2),
        brightness=float(rng.uniform(0.8, 1.2)),
        contrast=float(rng.uniform(0.8, 1.15)),
        background=_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))],
        bg_colour=bg,
        bg_second=np.clip(bg + rng.normal(0, 30, 3), 0, 255),
        floor_colour=rng.uniform(90, 160) + rng.normal(0, 10, 3),
        horizon=float(rng.uniform(0.55, 0.8)),
        blur=float(rng.uniform(0.0, 1.3)),
        scale=float(rng.uniform(0.88, 1.06)),
        offset=float(rng.normal(0, 0.05)),
        occlusion=float(rng.uniform(0.05, 0.3)),
        noise=float(rng.uniform(2, 8)),
    )


def _background(cam: Camera, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """h x w x 3 float32 background: the camera's scene, shifted a little per image."""
    ys = np.arange(h, dtype=np.float32)[:, None, None]
    xs = np.arange(w, dtype=np.float32)[None, :, None]
    # Each detection crops a different part of the scene.
    shift_x, shift_y = rng.uniform(0, 4 * w), rng.uniform(-0.05, 0.05) * h
    first = cam.bg_colour.astype(np.float32)
    second = cam.bg_second.astype(np.float32)
    if cam.background == "gradient":
        t = ys / h
        base = np.broadcast_to(first * (1 - t) + second * t, (h, w, 3))
    elif cam.background == "tiles":
        period = w / 3.0
        lines = ((xs + shift_x) % period < 1.5) | ((ys + shift_y) % period < 1.5)
        base = np.where(lines, second, first)
    elif cam.background == "columns":
        period = w / 1.7
        columns = ((xs + shift_x) % period) < period * 0.35
        base = np.broadcast_to(np.where(columns, second, first), (h, w, 3))
    else:  # blotches: a smooth random texture, upsampled from a coarse grid
        coarse = rng.uniform(0, 1, (6, 4, 1)).astype(np.float32)
        t = np.repeat(np.repeat(coarse, -(-h // 6), 0), -(-w // 4), 1)[:h, :w]
        base = first * (1 - t) + second * t
    base = np.array(base, dtype=np.float32)
    horizon = int((cam.horizon + rng.uniform(-0.04, 0.04)) * h)
    base[horizon:] = cam.floor_colour
    base += rng.normal(0, 6, 3).astype(np.float32)  # the light differs a little from frame to frame
    return base


def _fill(c) -> Tuple[int, int, int]:
    r, g, b = c
    return (min(255, max(0, int(r))), min(255, max(0, int(g))), min(255, max(0, int(b))))


def _torso_pattern(person: Identity, h: int, w: int, unit: float) -> np.ndarray:
    """The top's pattern over the whole canvas (masked to the torso later)."""
    ys = np.arange(h)[:, None]
    xs = np.arange(w)[None, :]
    period = max(2, int(round(unit)))
    if person.pattern == "hstripes":
        second = (ys // period) % 2 == 1
    elif person.pattern == "vstripes":
        second = (xs // period) % 2 == 1
    elif person.pattern == "checks":
        second = ((ys // period) + (xs // period)) % 2 == 1
    else:
        second = np.zeros((h, w), dtype=bool)
    second = np.broadcast_to(second, (h, w))
    colours = np.clip(np.stack([person.top, person.top_second]), 0, 255).astype(np.uint8)
    return colours[second.astype(np.intp)]


class _Body(NamedTuple):
    """Where the body parts of one drawn pedestrian are, in pixels."""

    cx: float  # centre of the hips
    cxt: float  # centre of the shoulders (the upper body leans)
    feet: float
    ph: float  # person height
    head_r: float
    head_cy: float
    shoulder_y: float
    waist_y: float
    knee_y: float
    half_sh: float  # half the shoulder width
    half_waist: float
    leg_w: float
    view: str  # front | back | side


def _draw_person(img: Image.Image, person: Identity, rng: np.random.Generator, cx: float, feet: float,
                 ph: float) -> None:
    """Draw the pedestrian onto img: centre x, feet y and height in pixels, with a random pose."""
    draw = ImageDraw.Draw(img)
    view = ("front", "back", "side")[rng.choice(3, p=[0.4, 0.35, 0.25])]
    stride = rng.uniform(-0.12, 0.12) * ph  # walking phase: feet apart
    swing = rng.uniform(-0.1, 0.1) * ph
    lean = rng.normal(0, 0.015) * ph
    shade = rng.uniform(0.85, 1.15)  # light on the person in this frame

    def paint(colour):
        return _fill(colour * shade)

    top_y = feet - ph
    narrow = 0.7 if view == "side" else 1.0
    half_sh = 0.13 * ph * person.width * narrow
    body = _Body(
        cx=cx, cxt=cx + lean, feet=feet, ph=ph, head_r=0.065 * ph, head_cy=top_y + 0.06825 * ph,
        shoulder_y=top_y + 0.16 * ph, waist_y=top_y + 0.50 * ph, knee_y=top_y + 0.74 * ph,
        half_sh=half_sh, half_waist=half_sh * 0.8, leg_w=0.055 * ph * person.width * (0.85 if view == "side" else 1.0),
        view=view,
    )
    _draw_legs(draw, person, body, stride, paint)
    _draw_torso(img, person, body, shade)
    _draw_arms(draw, person, body, swing, paint)
    _draw_bag(draw, person, body, paint)
    _draw_head(draw, person, body, paint)


def _draw_legs(draw: ImageDraw.ImageDraw, person: Identity, b: _Body, stride: float, paint) -> None:
    """Legs and shoes: trousers reach the shoes, shorts and skirts show skin."""
    bottom, leg_w = paint(person.bottom), b.leg_w
    for side in (-1, 1):
        hip_x = b.cx + side * b.half_waist * 0.5
        foot_x, foot_y = b.cx + side * (b.half_waist * 0.25 + stride / 2), b.feet - 0.02 * b.ph
        leg = [(hip_x - leg_w, b.waist_y), (hip_x + leg_w, b.waist_y),
               (foot_x + leg_w * 0.8, foot_y), (foot_x - leg_w * 0.8, foot_y)]
        draw.polygon(leg, fill=bottom if person.bottom_kind == "trousers" else paint(person.skin))
        if person.bottom_kind == "shorts":
            t = (b.knee_y - b.waist_y) / (foot_y - b.waist_y)
            knee_x = hip_x + t * (foot_x - hip_x)
            draw.polygon([leg[0], leg[1], (knee_x + leg_w * 0.95, b.knee_y), (knee_x - leg_w * 0.95, b.knee_y)],
                         fill=bottom)
        draw.ellipse([foot_x - leg_w * 1.2, foot_y - 0.02 * b.ph, foot_x + leg_w * 1.3, foot_y + 0.02 * b.ph],
                     fill=paint(person.shoes))
    belt_y = b.waist_y - 0.02 * b.ph
    if person.bottom_kind == "skirt":
        draw.polygon([(b.cx - b.half_waist, belt_y), (b.cx + b.half_waist, belt_y),
                      (b.cx + b.half_waist * 1.5, b.knee_y), (b.cx - b.half_waist * 1.5, b.knee_y)], fill=bottom)
    else:  # the seat of the trousers or shorts
        draw.rectangle([b.cx - b.half_waist, belt_y, b.cx + b.half_waist, b.waist_y + 0.06 * b.ph], fill=bottom)


def _draw_torso(img: Image.Image, person: Identity, b: _Body, shade: float) -> None:
    """The top, with its pattern, pasted through a torso-shaped mask."""
    torso = [(b.cxt - b.half_sh, b.shoulder_y), (b.cxt + b.half_sh, b.shoulder_y),
             (b.cx + b.half_waist, b.waist_y), (b.cx - b.half_waist, b.waist_y)]
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).polygon(torso, fill=255)
    lit = person._replace(top=person.top * shade, top_second=person.top_second * shade)
    pattern = _torso_pattern(lit, img.height, img.width, 0.05 * b.ph)
    img.paste(Image.fromarray(pattern, "RGB"), (0, 0), mask)


def _draw_arms(draw: ImageDraw.ImageDraw, person: Identity, b: _Body, swing: float, paint) -> None:
    """Sleeves in the top colour, hands (and forearms, for short sleeves) in skin; one arm seen from the side."""
    arm_w = max(1, int(round(0.05 * b.ph * person.width)))
    for side in (1,) if b.view == "side" else (-1, 1):
        shoulder = (b.cxt + side * b.half_sh * 0.9, b.shoulder_y + 0.02 * b.ph)
        hand_dx = swing if b.view == "side" else side * swing * 0.2
        hand = (shoulder[0] + side * 0.03 * b.ph + hand_dx, b.waist_y + 0.04 * b.ph)
        elbow = ((shoulder[0] + hand[0]) / 2, (shoulder[1] + hand[1]) / 2)
        draw.line([shoulder, elbow], fill=paint(person.top), width=arm_w)
        draw.line([elbow, hand], fill=paint(person.top if person.long_sleeves else person.skin), width=arm_w)
        r = arm_w / 2
        draw.ellipse([hand[0] - r, hand[1] - r, hand[0] + r, hand[1] + r], fill=paint(person.skin))


def _draw_bag(draw: ImageDraw.ImageDraw, person: Identity, b: _Body, paint) -> None:
    """A backpack (hides the back seen from behind, only straps from the front) or a shoulder bag."""
    colour, strap_w = paint(person.bag_colour), max(1, int(round(0.05 * b.ph * person.width)) // 2)
    top, bottom = b.shoulder_y + 0.03 * b.ph, b.waist_y - 0.04 * b.ph
    if person.bag == "backpack":
        if b.view == "back":
            draw.rectangle([b.cxt - b.half_sh * 0.75, top, b.cxt + b.half_sh * 0.75, bottom], fill=colour)
        elif b.view == "side":
            draw.rectangle([b.cxt - b.half_sh * 1.9, top, b.cxt - b.half_sh * 0.9, bottom - 0.02 * b.ph], fill=colour)
        else:
            for side in (-1, 1):
                x = b.cxt + side * b.half_sh * 0.55
                draw.line([(x, b.shoulder_y), (x, b.shoulder_y + 0.18 * b.ph)], fill=colour, width=strap_w)
    elif person.bag == "shoulder":
        side = -1 if b.view == "back" else 1
        strap = [(b.cxt - side * b.half_sh * 0.7, b.shoulder_y), (b.cx + side * b.half_waist, b.waist_y)]
        draw.line(strap, fill=colour, width=strap_w)
        x = b.cx + side * (b.half_waist + 0.03 * b.ph)
        draw.rectangle([x - 0.06 * b.ph, b.waist_y - 0.03 * b.ph, x + 0.06 * b.ph, b.waist_y + 0.08 * b.ph], fill=colour)


def _draw_head(draw: ImageDraw.ImageDraw, person: Identity, b: _Body, paint) -> None:
    """Neck, face (or the back of the head), hair, hat."""
    r, x, y = b.head_r, b.cxt, b.head_cy
    hair, hair_end = paint(person.hair), b.shoulder_y + 0.06 * b.ph
    draw.rectangle([x - r * 0.4, y + r * 0.6, x + r * 0.4, b.shoulder_y + 1], fill=paint(person.skin))
    head = [x - r * 0.85, y - r, x + r * 0.85, y + r]
    draw.ellipse(head, fill=hair if b.view == "back" else paint(person.skin))
    draw.chord(head, 180, 360, fill=hair)
    if person.long_hair:
        for side in (-1,) if b.view == "side" else (-1, 1):
            outer, inner = x + side * r * 0.75, x + side * r * 0.4
            draw.rectangle([min(outer, inner), y, max(outer, inner), hair_end], fill=hair)
        if b.view == "back":
            draw.rectangle([x - r * 0.8, y, x + r * 0.8, hair_end], fill=hair)
    if person.hat is not None:
        hat = paint(person.hat)
        draw.chord([x - r, y - r * 1.25, x + r, y + r * 0.5], 180, 360, fill=hat)
        draw.rectangle([x - r * 1.3, y - r * 0.4, x + r * 1.3, y - r * 0.25], fill=hat)


def _occlude(img: Image.Image, cam: Camera, rng: np.random.Generator) -> None:
    """Something between the camera and the person: a pole, a car, a passer-by."""
    draw = ImageDraw.Draw(img)
    h, w = img.height, img.width
    kind = rng.integers(3)
    colour = _fill(rng.uniform(20, 230, 3))
    if kind == 0:  # pole
        x = rng.uniform(0.1, 0.9) * w
        draw.rectangle([x - 0.06 * w, 0, x + 0.06 * w, h], fill=colour)
    elif kind == 1:  # car or bench across the bottom
        top = rng.uniform(0.6, 0.8) * h
        draw.rectangle([-1, top, w, h], fill=colour)
    else:  # a passer-by's shoulder at one side
        side = rng.choice([-1, 1])
        x0 = w * (0.72 if side > 0 else -0.3)
        draw.ellipse([x0, rng.uniform(0.15, 0.4) * h, x0 + 0.6 * w, 1.2 * h], fill=colour)


def render(person: Identity, cam: Camera, rng: np.random.Generator, height: int = 128, width: int = 64,
           body_fraction: float = 1.0) -> np.ndarray:
    """One image of ``person`` seen by ``cam``: height x width x 3 uint8.

    ``body_fraction`` < 1 draws a badly cropped detection (Market's junk boxes).
    """
    base = _background(cam, rng, height, width)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    ph = height * person.height * cam.scale * rng.uniform(0.93, 1.05) / body_fraction
    cx = width * (0.5 + cam.offset + rng.normal(0, 0.05))
    feet = height * rng.uniform(0.96, 1.02) + (ph - height * person.height * cam.scale) * (body_fraction < 1)
    _draw_person(img, person, rng, cx, feet, ph)
    if rng.random() < cam.occlusion:
        _occlude(img, cam, rng)
    radius = (cam.blur + rng.uniform(0, 0.4)) * height / 128
    if radius > 0.3:
        img = img.filter(ImageFilter.BoxBlur(radius))
    x = np.asarray(img, dtype=np.float32)
    # Camera response: contrast around mid-grey, then exposure and colour cast,
    # then sensor noise (one channel: cheaper, and luminance noise dominates).
    light = cam.brightness * rng.uniform(0.9, 1.1) * cam.gains
    gain = (cam.contrast * light).astype(np.float32)
    offset = (128 * (1 - cam.contrast) * light).astype(np.float32)
    x = x * gain + offset
    x += np.float32(cam.noise) * rng.standard_normal((height, width, 1), dtype=np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def _name(pid: int, cam: int, frame: int) -> str:
    """Market-1501 file name: pid, camera (1-based), sequence, frame, box."""
    return f"{pid:04d}_c{cam + 1}s1_{frame:06d}_01.jpg" if pid >= 0 else f"-1_c{cam + 1}s1_{frame:06d}_01.jpg"


class _Job(NamedTuple):
    split: str
    pid: int  # Market pid as written: 1.. for identities, 0 distractor, -1 junk
    camera: int  # 0-based
    key: int  # image number within (pid, camera) or within the junk/distractor list
    frame: int


def _plan(config: SynthConfig) -> List[_Job]:
    """Which image goes where: decided up front from the seed alone."""
    rng = _rng(config.seed, 0)
    jobs: List[_Job] = []
    frames = [0] * config.cameras

    def add(split, pid, cam, key):
        frames[cam] += int(rng.integers(1, 40))
        jobs.append(_Job(split, pid, cam, key, frames[cam]))

    num_ids = config.ids_train + config.ids_test
    for pid in range(1, num_ids + 1):
        train = pid <= config.ids_train
        # Every test camera needs 2 images (one query, one gallery), so cap the camera count.
        most = min(config.cameras, config.images_per_id if train else config.images_per_id // 2)
        n_cams = int(rng.integers(2, most + 1))
        cams = np.sort(rng.choice(config.cameras, n_cams, replace=False))
        counts = np.full(n_cams, 1 if train else 2)
        extra = config.images_per_id - counts.sum()
        counts += np.bincount(rng.integers(0, n_cams, extra), minlength=n_cams)
        for cam, count in zip(cams, counts):
            for key in range(count):
                split = "bounding_box_train" if train else ("query" if key == 0 else "bounding_box_test")
                add(split, pid, int(cam), key)
    test_images = config.ids_test * config.images_per_id
    for kind_pid, fraction in ((-1, config.junk_fraction), (0, config.distractor_fraction)):
        for key in range(int(round(fraction * test_images))):
            add("bounding_box_test", kind_pid, int(rng.integers(config.cameras)), key)
    return jobs


def _render_job(job: _Job, config: SynthConfig, cameras: List[Camera],
                identities: Dict[int, Identity]) -> np.ndarray:
    rng = _rng(config.seed, 3, job.pid + 2, job.camera, job.key)
    cam = cameras[job.camera]
    if job.pid > 0:
        return render(identities[job.pid], cam, rng, config.height, config.width)
    # Distractors are people seen once; junk are boxes that caught a fragment of one.
    person = make_identity(_rng(config.seed, 4, job.pid + 2, job.key))
    fraction = 1.0 if job.pid == 0 else rng.uniform(0.3, 0.6)
    return render(person, cam, rng, config.height, config.width, body_fraction=fraction)


class SynthImage(NamedTuple):
    split: str  # bounding_box_train | query | bounding_box_test
    name: str  # Market-1501 file name
    pid: int  # as in the name: identities from 1, 0 distractor, -1 junk
    camid: int  # 0-based
    pixels: np.ndarray  # height x width x 3 uint8


def iter_images(config: Optional[SynthConfig] = None) -> Iterator[SynthImage]:
    """Render the data set in memory, image by image, in a fixed order (what :func:`generate` writes)."""
    config = config or SynthConfig()
    config.validate()
    cameras = [make_camera(_rng(config.seed, 2, c)) for c in range(config.cameras)]
    num_ids = config.ids_train + config.ids_test
    identities = {pid: make_identity(_rng(config.seed, 1, pid)) for pid in range(1, num_ids + 1)}
    for job in _plan(config):
        pixels = _render_job(job, config, cameras, identities)
        yield SynthImage(job.split, _name(job.pid, job.camera, job.frame), job.pid, job.camera, pixels)


def num_images(config: SynthConfig) -> int:
    """How many images :func:`iter_images` yields."""
    return len(_plan(config))


def generate(out: str, config: Optional[SynthConfig] = None, overwrite: bool = False,
             progress: bool = False) -> Dict[str, int]:
    """Write the synthetic data set under ``out``; returns the image count per split folder.

    Args:
        out: folder to create (it may exist, but must not already hold the
            split folders unless ``overwrite``, which deletes those first).
        config: sizes and seed (:class:`SynthConfig`); defaults if None.
        overwrite: replace an existing synthetic data set in ``out``.
        progress: show a tqdm bar.
    """
    config = config or SynthConfig()
    config.validate()
    existing = [d for d in (*SPLIT_DIRS, MARKER_FILE) if os.path.exists(os.path.join(out, d))]
    if existing and not overwrite:
        raise FileExistsError(
            f"synth: {out} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) to replace it"
        )
    for d in existing:
        path = os.path.join(out, d)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for d in SPLIT_DIRS:
        os.makedirs(os.path.join(out, d))

    images = iter_images(config)
    if progress:
        from tqdm import tqdm

        images = tqdm(images, total=num_images(config), desc="synth", unit="img")
    counts = dict.fromkeys(SPLIT_DIRS, 0)
    for image in images:
        path = os.path.join(out, image.split, image.name)
        Image.fromarray(image.pixels, "RGB").save(path, quality=config.jpeg_quality)
        counts[image.split] += 1
    with open(os.path.join(out, MARKER_FILE), "w") as f:
        json.dump({"generator": "pyreid.data.synthetic", "config": asdict(config), "images": counts}, f, indent=2)
    return counts
