"""CMC / mAP / mINP against a slow reference written from the definition."""

import numpy as np
import pytest
import torch
from common import DEVICES

import pyreid
from pyreid.evaluation import Evaluator, evaluate, evaluate_rank, extract_features


def reference_scores(distmat, q_pids, g_pids, q_cams, g_cams, max_rank):
    """Per query, pure Python: rank the kept gallery by (distance, index), walk it."""
    distmat = np.asarray(distmat, dtype=np.float64)
    aps, trap_aps, inps, firsts = [], [], [], []
    for q in range(distmat.shape[0]):
        kept = [j for j in range(distmat.shape[1]) if not (g_pids[j] == q_pids[q] and g_cams[j] == q_cams[q])]
        kept.sort(key=lambda j: (distmat[q, j], j))
        is_match = [g_pids[j] == q_pids[q] for j in kept]
        n = sum(is_match)
        if n == 0:
            continue
        hits, ap, trap, old_precision, last = 0, 0.0, 0.0, 1.0, 0
        for position, match in enumerate(is_match, start=1):
            if match:
                hits += 1
                precision = hits / position
                ap += precision
                trap += (1.0 / n) * (old_precision + precision) / 2
                last = position
                if hits == 1:
                    firsts.append(position)
            old_precision = hits / position
        aps.append(ap / n)
        trap_aps.append(trap)
        inps.append(n / last)
    if not firsts:
        return dict(firsts=firsts)
    max_rank = min(max_rank, distmat.shape[1])
    cmc = np.array([np.mean([f <= r for f in firsts]) for r in range(1, max_rank + 1)])
    return dict(cmc=cmc, mAP=np.mean(aps), trap=np.mean(trap_aps), mINP=np.mean(inps), firsts=firsts)


def random_case(num_q, num_g, num_ids, num_cams, levels=None, seed=0):
    """Random identities/cameras; with `levels`, distances take few values (many ties)."""
    rng = np.random.default_rng(seed)
    if levels:
        distmat = rng.integers(0, levels, size=(num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g), dtype=np.float32)
    return (distmat, rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g),
            rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g))


@pytest.mark.parametrize("num_q,num_g,num_ids,num_cams,levels,chunk", [
    (1, 1, 1, 2, None, 256),
    (7, 13, 3, 2, None, 2),
    (30, 50, 5, 3, 4, 256),      # heavy ties
    (33, 41, 4, 6, 2, 5),        # heavy ties, odd chunks
    (64, 200, 20, 4, None, 16),
    (50, 120, 6, 1, 3, 7),       # one camera: every match of a query is junk -> all skipped?
])
def test_matches_reference(num_q, num_g, num_ids, num_cams, levels, chunk):
    case = random_case(num_q, num_g, num_ids, num_cams, levels, seed=num_q * 1000 + num_g)
    distmat, q_pids, g_pids, q_cams, g_cams = case
    ref = reference_scores(*case, max_rank=10)
    if not ref["firsts"]:
        with pytest.raises(ValueError, match="no query has a correct match"):
            evaluate(*case, chunk_size=chunk)
        return
    out = evaluate(*case, max_rank=10, chunk_size=chunk)
    np.testing.assert_allclose(out["cmc"], ref["cmc"], rtol=1e-6)
    assert out["mAP"] == pytest.approx(ref["mAP"], rel=1e-9)
    assert out["mINP"] == pytest.approx(ref["mINP"], rel=1e-9)
    assert out["num_valid_queries"] == len(ref["firsts"])
    for k in (1, 5, 10):
        assert out[f"rank{k}"] == pytest.approx(np.mean([f <= k for f in ref["firsts"]]))
    cmc, mAP = evaluate_rank(*case, max_rank=10, chunk_size=chunk)
    assert cmc.dtype == np.float32 and cmc.shape == (min(10, num_g),)
    assert mAP == pytest.approx(ref["mAP"], rel=1e-9)
    _, trap = evaluate_rank(*case, max_rank=10, ap="trapezoid", chunk_size=chunk)
    assert trap == pytest.approx(ref["trap"], rel=1e-9)


def test_hand_computed_example():
    # Query 0: pid 1, camera 0. Gallery (index: pid, camera, distance):
    #   0: 1, 0, 0.05  junk (same pid and camera) -> removed
    #   1: 2, 1, 0.10
    #   2: 1, 1, 0.20  match at rank 2
    #   3: 3, 0, 0.30
    #   4: 1, 2, 0.40  match at rank 4
    # Query 1: pid 4 has no gallery item -> skipped.
    # Query 2: pid 2, camera 0; gallery 1 (pid 2, cam 1) at 0.9 is ranked last (rank 5).
    distmat = np.array([[0.05, 0.10, 0.20, 0.30, 0.40],
                        [0.10, 0.20, 0.30, 0.40, 0.50],
                        [0.10, 0.90, 0.20, 0.30, 0.40]], dtype=np.float32)
    q_pids, q_cams = np.array([1, 4, 2]), np.array([0, 0, 0])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 0, 2])
    out = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5)
    # AP0 = (1/2 + 2/4) / 2 = 0.5 ; AP2 = 1/5 ; mAP = 0.35
    assert out["mAP"] == pytest.approx(0.35)
    # INP0 = 2/4, INP2 = 1/5
    assert out["mINP"] == pytest.approx((0.5 + 0.2) / 2)
    np.testing.assert_allclose(out["cmc"], [0, 0.5, 0.5, 0.5, 1.0])
    assert out["rank1"] == 0 and out["rank5"] == 1.0 and out["num_valid_queries"] == 2
    # Trapezoid: AP0 = 1/2*(1/1 + 1/2)/2 [before: rank 1 has 0 hits -> 0/1] ...
    #   match 1 at rank 2: before = 0/1 = 0, at = 1/2 -> (0 + 0.5)/2 / 2 = 0.125
    #   match 2 at rank 4: before = 1/3, at = 2/4 -> (1/3 + 1/2)/2 / 2 = 0.208333
    # AP2: match at rank 5: before = 0/4, at = 1/5 -> 0.1
    _, trap = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=5, ap="trapezoid")
    assert trap == pytest.approx((0.125 + 5 / 24 + 0.1) / 2)


def test_market_protocol_by_hand():
    # Each rule of the protocol changes this result if it is broken: junk removal (same identity
    # AND camera, not either alone), distractors (pid 0) ranked as wrong items, not removed, and a
    # query whose only same-identity items are junk skipped rather than scored 0.
    #   gallery:  g0 pid 5 cam 0 | g1 pid 0 cam 3 | g2 pid 5 cam 1 | g3 pid 7 cam 1
    #             g4 pid 7 cam 0 | g5 pid 9 cam 2 | g6 pid 5 cam 4
    g_pids, g_cams = np.array([5, 0, 5, 7, 7, 9, 5]), np.array([0, 3, 1, 1, 0, 2, 4])
    # Query A: pid 5, cam 0. g0 is junk; kept order g1 g2 g3 g4 g5 g6 -> matches at ranks 2 and 6.
    # Query B: pid 7, cam 1. g3 is junk; kept order g4 g6 g5 g2 g1 g0 -> its match at rank 1.
    # Query C: pid 9, cam 2. Its only item, g5, is junk: skipped.
    q_pids, q_cams = np.array([5, 7, 9]), np.array([0, 1, 2])
    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                        [0.9, 0.8, 0.7, 0.0, 0.1, 0.6, 0.5],
                        [0.3, 0.2, 0.1, 0.4, 0.5, 0.0, 0.6]], dtype=np.float32)
    out = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=6)
    assert out["num_valid_queries"] == 2
    # AP_A = (1/2 + 2/6) / 2 = 5/12, AP_B = 1.
    assert out["mAP"] == pytest.approx((5 / 12 + 1) / 2)
    # INP_A = 2 matches / rank 6 of the last one, INP_B = 1.
    assert out["mINP"] == pytest.approx((2 / 6 + 1) / 2)
    np.testing.assert_allclose(out["cmc"], [0.5, 1, 1, 1, 1, 1])
    assert (out["rank1"], out["rank5"], out["rank10"]) == (0.5, 1.0, 1.0)
    # Trapezoid AP_A: rank 2: (0/1 + 1/2) / 2 / 2; rank 6: (1/5 + 2/6) / 2 / 2. AP_B: (1 + 1) / 2.
    _, trap = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=6, ap="trapezoid")
    assert trap == pytest.approx(((0.5 / 4 + (1 / 5 + 2 / 6) / 4) + 1) / 2)
    # The slow reference used on the random cases agrees with the hand computation too.
    ref = reference_scores(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=6)
    assert ref["firsts"] == [2, 1] and ref["mAP"] == pytest.approx(out["mAP"])


def test_trapezoid_first_rank_uses_precision_one():
    # Matches at ranks 1 and 3 (n = 2): (1 + 1)/2/2 + (1/2 + 2/3)/2/2 = 0.5 + 0.291667
    distmat = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
    _, trap = evaluate_rank(distmat, [7], [7, 8, 7], [0], [1, 1, 1], max_rank=3, ap="trapezoid")
    assert trap == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    _, standard = evaluate_rank(distmat, [7], [7, 8, 7], [0], [1, 1, 1], max_rank=3)
    assert standard == pytest.approx((1 + 2 / 3) / 2)


def test_ties_follow_gallery_index():
    # All distances equal: the ranking is the gallery order (stable sort).
    distmat = np.zeros((1, 4), dtype=np.float32)
    out = evaluate(distmat, [5], [0, 5, 0, 5], [0], [1, 1, 1, 1], max_rank=4)
    assert out["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    np.testing.assert_allclose(out["cmc"], [0, 1, 1, 1])


def test_numpy_and_torch_inputs_agree():
    case = random_case(40, 90, 8, 3, levels=5, seed=3)
    ref = evaluate(*case, max_rank=20)
    as_torch = [torch.from_numpy(np.asarray(a)) for a in case]
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        out = evaluate(as_torch[0].to(dtype), *as_torch[1:], max_rank=20)
        assert out["mAP"] == pytest.approx(ref["mAP"], rel=1e-9)
        np.testing.assert_array_equal(out["cmc"], ref["cmc"])
    out = evaluate(case[0], *[list(a) for a in case[1:]], max_rank=20)
    assert out["mAP"] == pytest.approx(ref["mAP"], rel=1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_device_agrees_with_reference(device):
    case = random_case(70, 150, 10, 4, levels=6, seed=11)
    ref = reference_scores(*case, max_rank=15)
    tensors = [torch.as_tensor(np.asarray(a)).to(device) for a in case]
    out = evaluate(*tensors, max_rank=15, chunk_size=32)
    assert out["mAP"] == pytest.approx(ref["mAP"], rel=1e-9)
    assert out["mINP"] == pytest.approx(ref["mINP"], rel=1e-9)
    np.testing.assert_allclose(out["cmc"], ref["cmc"], rtol=1e-6)


def test_small_gallery_lowers_max_rank():
    case = random_case(5, 8, 2, 2, seed=1)
    with pytest.warns(UserWarning, match="max_rank is lowered to 8"):
        cmc, _ = evaluate_rank(*case, max_rank=50)
    assert cmc.shape == (8,) and cmc[-1] == 1.0


def test_input_errors():
    d = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="q_pids has 1 entries"):
        evaluate_rank(d, [0], [0, 1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="must be 2-D"):
        evaluate_rank(np.zeros(3), [0], [0, 1, 2], [0], [1, 1, 1])
    with pytest.raises(ValueError, match="unknown ap mode"):
        evaluate_rank(d, [0, 1], [0, 1, 2], [0, 0], [1, 1, 1], ap="interpolated")
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full((2, 3), np.nan, dtype=np.float32), [0, 1], [0, 1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(TypeError, match="must hold integers"):
        evaluate_rank(d, [0.5, 1], [0, 1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="no query has a correct match"):
        evaluate_rank(d, [0, 1], [0, 1, 2], [0, 0], [0, 0, 0])  # matches only in the query's own camera


class _Identity(torch.nn.Module):
    def forward(self, x):
        return x.flatten(1)


def _loader(features, pids, cams, batch=3):
    for s in range(0, len(pids), batch):
        f = features[s:s + batch]
        yield f, torch.tensor(pids[s:s + batch]), torch.tensor(cams[s:s + batch]), torch.arange(s, s + len(f))


def test_extract_features_and_evaluator():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 3, 2, 2, generator=g)
    q_pids, q_cams = [0, 1, 2, 3], [0, 0, 0, 0]
    g_pids, g_cams = [0, 1, 2, 3, 0, 1, 2, 3], [1, 1, 1, 1, 2, 2, 2, 2]
    q_img = centres[q_pids] + 0.01 * torch.randn(4, 3, 2, 2, generator=g)
    g_img = centres[g_pids] + 0.01 * torch.randn(8, 3, 2, 2, generator=g)
    model = _Identity().train()
    f, p, c = extract_features(model, _loader(q_img, q_pids, q_cams), progress=False, flip=True)
    assert model.training  # mode restored
    assert f.shape == (4, 12) and p.tolist() == q_pids and c.dtype == torch.int64
    flipped = (q_img + torch.flip(q_img, dims=[3])) / 2
    torch.testing.assert_close(f, flipped.flatten(1))
    for metric in ("euclidean", "cosine"):
        evaluator = Evaluator(model, list(_loader(q_img, q_pids, q_cams)), list(_loader(g_img, g_pids, g_cams)),
                              metric=metric, progress=False, max_rank=5)
        scores = evaluator.run()
        assert scores["mAP"] == pytest.approx(1.0) and scores["rank1"] == 1.0 and scores["num_valid_queries"] == 4


def test_evaluator_rerank_uses_ops_re_ranking():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(6, 3, 2, 2, generator=g)
    q_pids, q_cams = list(range(6)), [0] * 6
    g_pids, g_cams = list(range(6)) * 4, [1] * 6 + [2] * 6 + [3] * 6 + [4] * 6
    q_img = centres[q_pids] + 0.05 * torch.randn(6, 3, 2, 2, generator=g)
    g_img = centres[g_pids] + 0.05 * torch.randn(24, 3, 2, 2, generator=g)
    evaluator = Evaluator(_Identity(), list(_loader(q_img, q_pids, q_cams)), list(_loader(g_img, g_pids, g_cams)),
                          rerank=True, k1=5, k2=2, lambda_value=0.3, progress=False, max_rank=5)
    q = torch.nn.functional.normalize(q_img.flatten(1), dim=1)
    gal = torch.nn.functional.normalize(g_img.flatten(1), dim=1)
    expected = pyreid.ops.re_ranking(q, gal, k1=5, k2=2, lambda_value=0.3)
    torch.testing.assert_close(evaluator.distances(q_img.flatten(1), g_img.flatten(1)), expected)
    scores = evaluator.run()
    assert scores["mAP"] == pytest.approx(1.0) and scores["rank1"] == 1.0
    # rerank_distance="sqeuclidean": what torchreid's engine and Cluster-Contrast's evaluator feed the original.
    evaluator.rerank_distance = "sqeuclidean"
    squared = pyreid.ops.re_ranking(q, gal, k1=5, k2=2, lambda_value=0.3, distance="sqeuclidean")
    assert not torch.allclose(squared, expected)
    torch.testing.assert_close(evaluator.distances(q_img.flatten(1), g_img.flatten(1)), squared)
    evaluator.rerank_distance = "cityblock"
    with pytest.raises(ValueError, match="unknown distance 'cityblock'"):
        evaluator.distances(q_img.flatten(1), g_img.flatten(1))


def test_evaluator_on_the_synthetic_set(tmp_path):
    """End to end: synthetic data set -> test loaders -> random-init model -> scores and a ranked-list
    picture, each checked against a computation that does not go through the Evaluator."""
    from PIL import Image

    from pyreid.data import build_dataset
    from pyreid.data.loaders import build_test_loader
    from pyreid.data.synthetic import SynthConfig, generate
    from pyreid.evaluation.visualize import plot_ranked_lists
    from pyreid.models import build_model

    generate(str(tmp_path / "synth"), SynthConfig(ids_train=2, ids_test=6, cameras=2, images_per_id=4))
    ds = build_dataset("synthetic", str(tmp_path / "synth"))
    loaders = [build_test_loader(items, batch_size=16, height=64, width=32, num_workers=0)
               for items in (ds.query, ds.gallery)]  # images resized to 64 x 32: fast
    torch.manual_seed(0)
    model = build_model("resnet18")
    evaluator = Evaluator(model, *loaders, progress=False, max_rank=10)
    scores = evaluator.run(return_distmat=True)

    # Features by hand: the eval-mode model on every batch, L2-normalised, Euclidean distances.
    model.eval()
    with torch.no_grad():
        q_feat, g_feat = (torch.nn.functional.normalize(torch.cat([model(b[0]) for b in loader]), dim=1)
                          for loader in loaders)
    distmat = scores["distmat"]
    assert distmat.shape == (len(ds.query), len(ds.gallery))
    torch.testing.assert_close(distmat, torch.cdist(q_feat, g_feat), atol=1e-5, rtol=1e-5)
    q_pids, q_cams = [p for _, p, _ in ds.query], [c for _, _, c in ds.query]
    g_pids, g_cams = [p for _, p, _ in ds.gallery], [c for _, _, c in ds.gallery]
    ref = reference_scores(distmat.numpy(), q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert scores["num_valid_queries"] == len(ref["firsts"]) > 0
    assert scores["mAP"] == pytest.approx(ref["mAP"], rel=1e-9)
    assert scores["mINP"] == pytest.approx(ref["mINP"], rel=1e-9)
    assert scores["rank1"] == pytest.approx(np.mean([f == 1 for f in ref["firsts"]]))
    np.testing.assert_allclose(scores["cmc"], ref["cmc"], rtol=1e-6)

    out = plot_ranked_lists(distmat, [p for p, _, _ in ds.query], [p for p, _, _ in ds.gallery],
                            q_pids, g_pids, q_cams, g_cams, tmp_path / "ranked.png", query_indices=[0, 1])
    with Image.open(out) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # Each ranked cell's left frame edge is green for a match, red otherwise, in the order the
    # protocol ranks the gallery (own-camera items of the query's identity left out).
    d = distmat.numpy()
    for row, q in enumerate((0, 1)):
        kept = [j for j in range(len(g_pids)) if not (g_pids[j] == q_pids[q] and g_cams[j] == q_cams[q])]
        kept.sort(key=lambda j: (d[q, j], j))
        for col, j in enumerate(kept[:10], start=1):
            colour = (0, 200, 0) if g_pids[j] == q_pids[q] else (220, 0, 0)
            pixel = pixels[row * (128 + 24) + 24 + 64, col * 64 + 1]
            assert np.abs(pixel - colour).max() <= 12, (q, col, pixel)
