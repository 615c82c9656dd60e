"""PK samplers, transforms and loaders."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from pyreid.data import (
    CameraAwareIdentitySampler,
    RandomIdentitySampler,
    build_test_loader,
    build_train_loader,
    build_transforms,
)


def _items(images_per_pid, cameras=None):
    """(path, pid, camid) items; images_per_pid[p] images of pid p, cameras cycling or given."""
    items = []
    for pid, n in enumerate(images_per_pid):
        for k in range(n):
            cam = cameras[pid][k] if cameras else k % 3
            items.append((f"{pid}_{k}.jpg", pid, cam))
    return items


def _batches(sampler, batch_size):
    indices = list(sampler)
    assert len(indices) == len(sampler)
    return [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]


@pytest.mark.parametrize("sampler_cls", [RandomIdentitySampler, CameraAwareIdentitySampler])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_every_batch_is_p_identities_times_k(sampler_cls, k):
    # pid 3 has a single image and pid 5 two: they are sampled with replacement.
    items = _items([6, 4, 9, 1, 7, 2, 5, 8])
    p = 4
    sampler = sampler_cls(items, batch_size=p * k, num_instances=k, iters=25, seed=1)
    assert len(sampler) == 25 * p * k
    batches = _batches(sampler, p * k)
    assert len(batches) == 25
    for batch in batches:
        pids = [items[i][1] for i in batch]
        counts = Counter(pids)
        assert len(counts) == p and set(counts.values()) == {k}, counts
        # each identity's K instances are contiguous (anchor first for the camera-aware one)
        assert all(len(set(pids[j * k: (j + 1) * k])) == 1 for j in range(p))
        for pid in counts:
            chosen = [i for i in batch if items[i][1] == pid]
            available = sum(1 for it in items if it[1] == pid)
            if sampler_cls is RandomIdentitySampler and available >= k:
                assert len(set(chosen)) == k  # no repeats when there are enough images
            if sampler_cls is RandomIdentitySampler and available < k:
                assert len(set(chosen)) == available  # all of them, then repeats


def test_identities_are_drawn_evenly():
    items = _items([2] * 10 + [30] * 10)  # image counts must not bias the identity draw
    sampler = RandomIdentitySampler(items, batch_size=8, num_instances=2, iters=100, seed=0)
    counts = Counter(items[i][1] for i in sampler)
    per_pid = np.array([counts[p] for p in range(20)]) / 2
    assert per_pid.sum() == 400 and per_pid.min() >= 19 and per_pid.max() <= 21  # 400 draws / 20 ids


def test_outliers_are_not_sampled():
    items = _items([3, 3, 3]) + [("noise.jpg", -1, 0)] * 5
    sampler = RandomIdentitySampler(items, batch_size=4, num_instances=2, iters=10, seed=0)
    assert all(items[i][1] >= 0 for i in sampler)


def test_camera_aware_prefers_other_cameras():
    # pid 0: 5 images in camera 0, 2 in camera 1 -> an anchor in camera 0
    #        must get camera-1 positives only (with repeats, as K - 1 = 3 > 2);
    #        an anchor in camera 1 gets camera-0 positives.
    # pid 1: one camera only -> positives come from that camera.
    # pid 2: a single image -> repeated.
    cameras = [[0, 0, 0, 0, 0, 1, 1], [2, 2, 2], [1], [0, 1, 2, 0, 1]]
    items = _items([len(c) for c in cameras], cameras)
    sampler = CameraAwareIdentitySampler(items, batch_size=8, num_instances=4, iters=200, seed=0)
    seen_anchor_cams = set()
    for batch in _batches(sampler, 8):
        for j in range(2):
            group = batch[j * 4: (j + 1) * 4]
            anchor, rest = group[0], group[1:]
            pid, anchor_cam = items[anchor][1], items[anchor][2]
            rest_cams = [items[i][2] for i in rest]
            if pid == 0:
                seen_anchor_cams.add(anchor_cam)
                assert all(c != anchor_cam for c in rest_cams)
            elif pid == 1:
                assert all(c == 2 for c in rest_cams) and anchor not in rest and len(set(rest)) == 2
            elif pid == 2:
                assert rest == [anchor] * 3
            else:
                assert all(c != anchor_cam for c in rest_cams)
    assert seen_anchor_cams == {0, 1}
    # The plain PK sampler, on the same data, does put same-camera positives together.
    plain = RandomIdentitySampler(items, batch_size=8, num_instances=4, iters=50, seed=0)
    assert any(len({items[i][2] for i in batch[j * 4: (j + 1) * 4]}) < 4
               for batch in _batches(plain, 8) for j in range(2) if items[batch[j * 4]][1] == 0)


@pytest.mark.parametrize("sampler_cls", [RandomIdentitySampler, CameraAwareIdentitySampler])
def test_deterministic_per_seed_and_epoch(sampler_cls):
    items = _items([5, 3, 8, 2, 6, 4])

    def make(seed):
        return sampler_cls(items, batch_size=6, num_instances=3, iters=7, seed=seed)

    a, b = make(0), make(0)
    epoch0, epoch1 = list(a), list(a)
    assert epoch0 == list(b) and epoch1 == list(b)  # same seed: same epochs, in order
    assert epoch0 != epoch1  # a new epoch reshuffles
    b.set_epoch(0)
    assert list(b) == epoch0  # replay an epoch
    assert list(make(1)) != epoch0


def test_sampler_argument_errors():
    items = _items([3, 3, 3])
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(items, batch_size=10, num_instances=4, iters=1)
    with pytest.raises(ValueError, match="iters must be >= 1"):
        RandomIdentitySampler(items, batch_size=4, num_instances=2, iters=0)
    with pytest.raises(ValueError, match="needs 4 distinct identities.*have 3"):
        RandomIdentitySampler(items, batch_size=8, num_instances=2, iters=1)


def test_transforms_shapes_and_normalisation():
    img = Image.new("RGB", (64, 128), (124, 116, 104))  # ~ the ImageNet mean colour
    test = build_transforms(256, 128, train=False)
    x = test(img)
    assert x.shape == (3, 256, 128) and x.dtype == torch.float32
    assert x.abs().max() < 0.02  # the mean colour normalises to ~0
    train = build_transforms(128, 64, train=True)
    torch.manual_seed(0)
    outs = [train(img) for _ in range(8)]
    assert all(o.shape == (3, 128, 64) for o in outs)
    # pad + random crop brings in zero padding (far from the mean), erasing sets boxes to exactly 0
    assert any((o < -1.5).any() for o in outs)
    plain = build_transforms(128, 64, train=True, flip_prob=0, pad=0, erasing_prob=0)
    assert torch.allclose(plain(img), build_transforms(128, 64, train=False)(img))
    with pytest.raises(ValueError, match="image size must be positive"):
        build_transforms(0, 64)


def _image_tree(tmp_path, images_per_pid):
    items = []
    for pid, n in enumerate(images_per_pid):
        for k in range(n):
            path = str(tmp_path / f"{pid}_{k}.jpg")
            Image.new("RGB", (32, 64), (pid * 40 % 256, k * 30 % 256, 90)).save(path)
            items.append((path, pid, k % 2))
    return items


def test_train_loader_batches(tmp_path):
    items = _image_tree(tmp_path, [3, 4, 2, 5])
    loader = build_train_loader(items, batch_size=6, num_instances=3, iters=4, height=64, width=32,
                                num_workers=0, seed=0)
    batches = list(loader)
    assert len(batches) == 4 and len(loader) == 4
    for images, pids, camids, indices in batches:
        assert images.shape == (6, 3, 64, 32)
        assert pids.tolist() == [items[i][1] for i in indices.tolist()]
        assert camids.tolist() == [items[i][2] for i in indices.tolist()]
        assert sorted(Counter(pids.tolist()).values()) == [3, 3]
    # Same seed: same indices; with workers, the same augmentation too.
    def run(seed):
        return list(build_train_loader(items, batch_size=6, num_instances=3, iters=4, height=64, width=32,
                                       num_workers=1, seed=seed))

    first, again = run(0), run(0)
    assert [b[3].tolist() for b in first] == [b[3].tolist() for b in batches]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[3], b[3]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, run(1)))
    camera_aware = build_train_loader(items, batch_size=6, num_instances=3, iters=2, height=64, width=32,
                                      num_workers=0, camera_aware=True)
    assert isinstance(camera_aware.sampler.sampler, CameraAwareIdentitySampler)


def test_train_loader_augmentation_depends_on_seed_and_epoch_only(tmp_path):
    """Augmentation is seeded per draw: 0 or 2 workers, any global RNG state, the same images;
    set_epoch replays an epoch (what resuming a run relies on)."""
    items = _image_tree(tmp_path, [3, 4, 2, 5])

    def epoch(num_workers, e, global_seed):
        torch.manual_seed(global_seed)
        loader = build_train_loader(items, batch_size=6, num_instances=3, iters=3, height=64, width=32,
                                    num_workers=num_workers, seed=5)
        loader.sampler.set_epoch(e)
        return [b[0] for b in loader]

    reference = epoch(0, 2, global_seed=0)
    for other in (epoch(2, 2, global_seed=1), epoch(0, 2, global_seed=7)):
        assert all(torch.equal(a, b) for a, b in zip(reference, other))
    assert not all(torch.equal(a, b) for a, b in zip(reference, epoch(0, 3, global_seed=0)))
    # The caller's generator is left alone.
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    epoch(0, 0, global_seed=3)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(1), expected)


@pytest.mark.parametrize("sampler_cls", [RandomIdentitySampler, CameraAwareIdentitySampler])
def test_ranks_split_the_global_batch(sampler_cls):
    items = _items([5, 3, 6, 2, 4, 7, 3, 5])
    kwargs = dict(batch_size=8, num_instances=2, iters=5, seed=3)
    whole = list(sampler_cls(items, **kwargs))
    shards = [list(sampler_cls(items, rank=r, world_size=2, **kwargs)) for r in range(2)]
    assert all(len(s) == len(whole) // 2 for s in shards)
    for b in range(5):  # each global batch = rank 0's half then rank 1's half
        assert whole[8 * b:8 * b + 8] == shards[0][4 * b:4 * b + 4] + shards[1][4 * b:4 * b + 4]
    with pytest.raises(ValueError, match="split evenly across 3 processes"):
        sampler_cls(items, rank=0, world_size=3, **kwargs)
    with pytest.raises(ValueError, match="rank must be in"):
        sampler_cls(items, rank=2, world_size=2, **kwargs)


def test_test_loader_keeps_order(tmp_path):
    items = _image_tree(tmp_path, [2, 3])
    loader = build_test_loader(items, batch_size=2, height=64, width=32, num_workers=0)
    indices = torch.cat([batch[3] for batch in loader])
    assert indices.tolist() == list(range(5))
    images = next(iter(loader))[0]
    assert images.shape == (2, 3, 64, 32)
