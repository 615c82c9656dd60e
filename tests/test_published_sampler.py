"""Cluster-Contrast's RandomMultipleGallerySampler rule (PublishedCameraAwareSampler) against its
definition: repeats whenever an identity has fewer than K other-camera images, the same-camera
fallback, single-image identities, passes whose incomplete last batch is dropped; and the
``sampler`` config key."""

from collections import Counter

import numpy as np
import pytest

from pyreid.data import CameraAwareIdentitySampler, PublishedCameraAwareSampler, build_train_loader


def _items(cameras_per_pid):
    """(path, pid, camid) items: cameras_per_pid[p] lists the camera of each image of pid p."""
    return [(f"{pid}_{k}.jpg", pid, cam) for pid, cams in enumerate(cameras_per_pid) for k, cam in enumerate(cams)]


def _groups(sampler, items):
    """Every pass's identity groups, split where the pid changes (consecutive groups never share a
    pid within a pass, each identity being visited once per pass)."""
    groups, current = [], []
    for index in sampler:
        if current and items[index][1] != items[current[0]][1]:
            groups.append(current)
            current = []
        current.append(index)
    return groups + [current]


def test_replacement_below_k_other_camera_images():
    k = 4
    # pid 0: 4 images, 4 cameras -> 3 other-camera images whatever the anchor: 3 < K, with replacement.
    # pid 1: 5 images, 5 cameras -> 4 other-camera images: 4 >= K, without replacement.
    items = _items([[0, 1, 2, 3], [0, 1, 2, 3, 4]])
    sampler = PublishedCameraAwareSampler(items, batch_size=k, num_instances=k, iters=2)
    repeated = {0: 0, 1: 0}
    for epoch in range(400):
        sampler.set_epoch(epoch)
        for group in _groups(sampler, items):
            pid = items[group[0]][1]
            assert len(group) == k
            anchor_cam = items[group[0]][2]
            assert all(items[i][2] != anchor_cam for i in group[1:]), "positives come from other cameras"
            repeated[pid] += len(set(group[1:])) < k - 1
    assert repeated[1] == 0
    # 3 draws with replacement from 3 images repeat one with probability 1 - 3!/3^3 = 7/9.
    assert abs(repeated[0] / 400 - 7 / 9) < 4.5 * (7 / 9 * 2 / 9 / 400) ** 0.5
    # pyreid's own sampler takes the 3 distinct images when K - 1 = 3 are there.
    ours = CameraAwareIdentitySampler(items, batch_size=8, num_instances=k, iters=50)
    for batch in np.array(list(ours)).reshape(-1, 8):
        for group in (batch[:4], batch[4:]):
            assert len(set(group[1:].tolist())) == 3


def test_same_camera_fallback_and_single_images():
    k = 4
    # pid 0: 3 images all from camera 0 -> K - 1 of its 2 other images, with replacement.
    # pid 1: one image -> the anchor alone. pid 2: 8 images, 2 cameras, 4 each.
    items = _items([[0, 0, 0], [5], [1, 1, 1, 1, 2, 2, 2, 2]])
    sampler = PublishedCameraAwareSampler(items, batch_size=1, num_instances=k, iters=9)
    for epoch in range(100):
        sampler.set_epoch(epoch)
        for group in _groups(sampler, items):
            pid = items[group[0]][1]
            if pid == 0:
                assert len(group) == k and group[0] not in group[1:]
            elif pid == 1:
                assert group == [3]
            else:
                # 4 other-camera images, 4 >= K: three distinct ones, none from the anchor's camera.
                assert len(set(group[1:])) == 3 and all(items[i][2] != items[group[0]][2] for i in group[1:])


def test_each_pass_drops_its_incomplete_last_batch():
    items = _items([[0, 1]] * 5)  # 5 identities x K = 4 -> 20 images a pass
    sampler = PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=6)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 48
    # 16 of each pass's 20 images are used (two batches of 8): 3 passes, each missing one identity.
    for start in range(0, 48, 16):
        counts = Counter(items[i][1] for i in indices[start:start + 16])
        assert len(counts) == 4 and set(counts.values()) == {4}
    # A single-image identity shifts the groups: a pass of 4 x 4 + 1 = 17 keeps 16, and a group may
    # straddle two batches.
    items = _items([[0, 1]] * 4 + [[2]])
    sampler = PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=40, seed=3)
    indices = list(sampler)
    straddles = 0
    for start in range(0, len(indices), 16):
        counts = Counter(items[i][1] for i in indices[start:start + 16])
        assert sum(counts.values()) == 16 and counts.get(4, 0) <= 1
        straddles += len({items[i][1] for i in indices[start + 7:start + 9]}) == 1
    assert straddles > 0


def test_deterministic_ranks_and_errors():
    items = _items([[0, 1, 2]] * 6)
    a = PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=5, seed=1)
    b = PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=5, seed=1)
    first = list(a)  # epoch 0; the next iter() moves on to epoch 1
    assert first == list(b) and list(a) == list(b) != first
    assert first != list(PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=5, seed=2))
    a.set_epoch(0)
    assert list(a) == first
    whole = PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=5, seed=1)
    ranks = [list(PublishedCameraAwareSampler(items, batch_size=8, num_instances=4, iters=5, seed=1, rank=r,
                                              world_size=2)) for r in range(2)]
    batches = np.array(list(whole)).reshape(5, 8)
    assert [batch.tolist() for batch in batches] == [ranks[0][4 * i:4 * i + 4] + ranks[1][4 * i:4 * i + 4]
                                                     for i in range(5)]
    with pytest.raises(ValueError, match="not one batch of 64"):
        list(PublishedCameraAwareSampler(items, batch_size=64, num_instances=4, iters=1))
    with pytest.raises(ValueError, match="every pid < 0"):
        PublishedCameraAwareSampler([("a.jpg", -1, 0)], batch_size=4, num_instances=4, iters=1)
    with pytest.raises(ValueError, match="split evenly"):
        PublishedCameraAwareSampler(items, batch_size=6, num_instances=4, iters=1, world_size=4)


def test_loader_and_config_select_it():
    from pyreid.training.config import ConfigError
    from pyreid.training.run import resolve_config

    items = _items([[0, 1]] * 4)
    loader = build_train_loader(items, batch_size=8, num_instances=4, iters=2, camera_aware=True,
                                sampler="published", num_workers=0)
    assert isinstance(loader.sampler.sampler, PublishedCameraAwareSampler)
    with pytest.raises(ValueError, match="needs camera_aware"):
        build_train_loader(items, batch_size=8, num_instances=4, iters=2, sampler="published", num_workers=0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        build_train_loader(items, batch_size=8, num_instances=4, iters=2, sampler="cc", num_workers=0)
    for name in ("cluster_contrast_market1501", "cluster_contrast_dukemtmcreid", "cluster_contrast_msmt17",
                 "cluster_contrast_veri", "cluster_contrast_market1501_ibn", "cluster_contrast_msmt17_ibn",
                 "ise_market1501", "ise_dukemtmcreid", "ise_msmt17"):
        _, config, _ = resolve_config("ise" if name.startswith("ise") else "cluster-contrast", config=name)
        assert (config.sampler, config.random_erasing, config.camera_aware) == ("published", "published", True)
    _, config, _ = resolve_config("cluster-contrast", config="cluster_contrast_synthetic_cpu")
    assert config.sampler == "pyreid"
    with pytest.raises(ConfigError, match="needs camera_aware"):
        resolve_config("supervised", config="supervised_synthetic_cpu", sampler="published")[1].validate()
