"""The PNG pictures: size, and what is drawn where (read back from the pixels)."""

import numpy as np
import pytest
from PIL import Image
from threadpoolctl import threadpool_limits

from pyreid.evaluation.visualize import plot_cmc, plot_embedding, plot_ranked_lists, ranked_list_size

GREEN, RED = (0, 200, 0), (220, 0, 0)  # the frame colours of plot_ranked_lists
# matplotlib's default colour cycle (C0, C1) and the first tab20 colours, in 0-255.
C0, C1 = (31, 119, 180), (255, 127, 14)
TAB20 = [(31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
         (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (196, 156, 148),
         (227, 119, 194), (247, 182, 210), (127, 127, 127), (199, 199, 199), (188, 189, 34), (219, 219, 141),
         (23, 190, 207), (158, 218, 229)]
LIGHTGREY = (211, 211, 211)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _close(pixel, colour, tol=12) -> bool:
    return bool(np.abs(np.asarray(pixel) - np.asarray(colour)).max() <= tol)


def _write_images(folder, colours):
    # PNG, not JPEG: flat colours come back exactly, so a cell can be identified by its colour.
    folder.mkdir()
    paths = []
    for i, colour in enumerate(colours):
        path = folder / f"{i:04d}.png"
        Image.new("RGB", (32, 64), tuple(int(c) for c in colour)).save(path)
        paths.append(str(path))
    return paths


def test_ranked_lists_frames_and_order(tmp_path):
    # Two queries, six gallery images, each image its own flat colour (none near red or green).
    q_pids, q_cams = np.array([1, 2]), np.array([0, 0])
    g_pids, g_cams = np.array([1, 2, 1, 3, 1, 2]), np.array([0, 1, 1, 2, 2, 0])
    distmat = np.array([
        # g0 is query 0's junk (pid 1, camera 0); g2 and g3 tie at 0.2 and keep gallery order.
        [0.0, 0.1, 0.2, 0.2, 0.5, 0.6],
        # g5 is query 1's junk (pid 2, camera 0).
        [0.4, 0.3, 0.1, 0.2, 0.6, 0.0],
    ], dtype=np.float32)
    q_colours = [(250, 250, 60), (60, 250, 250)]
    g_colours = [(40, 40, 40), (120, 60, 160), (250, 160, 200), (90, 90, 250), (160, 120, 60),
                 (250, 250, 250)]
    q_paths = _write_images(tmp_path / "q", q_colours)
    g_paths = _write_images(tmp_path / "g", g_colours)
    out = tmp_path / "plots" / "ranked.png"
    written = plot_ranked_lists(distmat, q_paths, g_paths, q_pids, g_pids, q_cams, g_cams, out, topk=4)
    assert written == str(out)

    cell_w, cell_h, label_h, border = 64, 128, 24, 4
    pixels = _pixels(out)
    assert pixels.shape[:2][::-1] == ranked_list_size(2, 4) == (5 * cell_w, 2 * (cell_h + label_h))
    # Expected ranked lists, worked out by hand from the protocol (junk removed, ties by index).
    expected = {0: [(1, RED), (2, GREEN), (3, RED), (4, GREEN)],
                1: [(2, RED), (3, RED), (1, GREEN), (0, RED)]}
    for row, q in enumerate((0, 1)):
        top = row * (cell_h + label_h) + label_h
        mid_y = top + cell_h // 2
        # Query cell: the query image, no frame (its colour reaches the cell edge).
        assert _close(pixels[mid_y, cell_w // 2], q_colours[q])
        assert _close(pixels[mid_y, 1], q_colours[q])
        for col, (g, frame) in enumerate(expected[q], start=1):
            left = col * cell_w
            assert _close(pixels[mid_y, left + cell_w // 2], g_colours[g]), (q, col)  # the right image
            for y, x in ((mid_y, left + 1), (mid_y, left + cell_w - 2), (top + 1, left + cell_w // 2),
                         (top + cell_h - 2, left + cell_w // 2)):
                assert _close(pixels[y, x], frame), (q, col, y, x)
            # The frame is 4 pixels wide.
            assert _close(pixels[mid_y, left + border - 1], frame)
            assert _close(pixels[top + border - 1, left + 9], frame)
            assert _close(pixels[mid_y, left + border + 1], g_colours[g])
            # The caption above the cell is written in the frame's colour.
            band = pixels[top - label_h:top, left:left + cell_w]
            dominant = 1 if frame == GREEN else 0
            other = 0 if dominant == 1 else 1
            assert ((band[..., dominant] > 120) & (band[..., other] < 80)).any(), (q, col)


def test_ranked_lists_default_queries_and_errors(tmp_path):
    paths = _write_images(tmp_path / "img", [(100, 100, 100)] * 3)
    distmat = np.zeros((10, 3), dtype=np.float32)
    out = plot_ranked_lists(distmat, paths * 4, paths, np.arange(10), np.zeros(3, int), np.zeros(10, int),
                            np.ones(3, int), tmp_path / "r.png", topk=3, cell_size=(16, 32))
    assert _pixels(out).shape[:2][::-1] == ranked_list_size(8, 3, (16, 32))  # the first 8 queries
    with pytest.raises(ValueError, match="no query to draw"):
        plot_ranked_lists(distmat, paths * 4, paths, np.arange(10), np.zeros(3, int), np.zeros(10, int),
                          np.ones(3, int), tmp_path / "none.png", query_indices=[])


def _axes_box(pixels):
    """(left, right, top, bottom) pixel positions of the axes frame: the longest dark lines."""
    dark = pixels.sum(axis=-1) < 150
    cols, rows = np.argsort(dark.sum(axis=0))[-2:], np.argsort(dark.sum(axis=1))[-2:]
    return min(cols), max(cols), min(rows), max(rows)


def _near(pixels, x, y, colour, radius=2) -> bool:
    x, y = int(round(x)), int(round(y))
    patch = pixels[y - radius:y + radius + 1, x - radius:x + radius + 1]
    return bool((np.abs(patch - np.asarray(colour)).max(axis=-1) <= 40).any())


def test_cmc_curve_points(tmp_path):
    curves = {"good": np.array([0.2, 0.5, 0.55, 0.9, 0.95]), "poor": np.array([0.05, 0.1, 0.3, 0.35, 0.6])}
    out = plot_cmc(curves, tmp_path / "cmc.png", max_rank=4, size=(500, 400))
    pixels = _pixels(out)
    assert pixels.shape[:2] == (400, 500)
    left, right, top, bottom = _axes_box(pixels)
    assert right - left > 250 and bottom - top > 200
    # y: 0..100 % fixed; x: ranks 1..4 with matplotlib's default 5% margins on each side.
    lo, hi = 1 - 0.05 * 3, 4 + 0.05 * 3

    def position(rank, value):
        return (left + (rank - lo) / (hi - lo) * (right - left), bottom - value * (bottom - top))

    for colour, cmc in ((C0, curves["good"]), (C1, curves["poor"])):
        for rank in range(1, 5):
            assert _near(pixels, *position(rank, cmc[rank - 1]), colour), (colour, rank)
        # Where a curve drawn as 1 - CMC, or from rank 0, would put its points there is nothing of its colour.
        assert not _near(pixels, *position(1, 1 - cmc[0]), colour)
        assert not _near(pixels, *position(1, cmc[1]), colour)
    # max_rank=4 cuts the fifth point: nothing of either colour right of rank 4's point (the
    # legend sits in the lower right, so look at the upper half only).
    x4 = int(position(4, 0)[0]) + 6
    upper = pixels[top + 2:(top + bottom) // 2, x4:right - 1]
    for colour in (C0, C1):
        assert not (np.abs(upper - np.asarray(colour)).max(axis=-1) <= 40).any()
    with pytest.raises(ValueError, match="no curve"):
        plot_cmc({}, tmp_path / "empty.png")


def test_embedding_colours_and_clusters(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 12)
    centres = 3 * rng.normal(size=(5, 16))
    features = centres[labels] + 0.1 * rng.normal(size=(60, 16))
    labels[:4] = -1  # four outliers, placed far from every cluster
    features[:4] = 3 * rng.normal(size=(4, 16))
    # One thread: 60 points need no more, and OpenMP threads competing with torch's on a busy
    # 2-core machine made this call take 3x as long.
    with threadpool_limits(1):
        out = plot_embedding(features, labels, tmp_path / "tsne.png", size=(400, 300))
    pixels = _pixels(out)
    assert pixels.shape[:2] == (300, 400)

    left, right, top, bottom = _axes_box(pixels)
    inside = np.zeros(pixels.shape[:2], dtype=bool)
    inside[top + 3:bottom - 2, left + 3:right - 2] = True  # no text and no spine here, only the points

    def mask(colour):
        return (np.abs(pixels - np.asarray(colour)).max(axis=-1) <= 3) & inside

    # Labels 0..4 take the first five tab20 colours, outliers light grey, no other tab20 colour appears.
    assert mask(LIGHTGREY).sum() > 10
    centroids = []
    for code in range(5):
        ys, xs = np.nonzero(mask(TAB20[code]))
        assert ys.size > 10, code
        # Each identity is one tight blob (the clusters are far apart in feature space).
        assert xs.max() - xs.min() < 400 // 4 and ys.max() - ys.min() < 300 // 4, code
        centroids.append((xs.mean(), ys.mean()))
    for code in range(5, 20):
        if len(set(TAB20[code])) > 1:  # the two greys of tab20 also occur in anti-aliased black text
            assert mask(TAB20[code]).sum() == 0, code
    centroids = np.array(centroids)
    gaps = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1) + 1e9 * np.eye(5)
    assert gaps.min() > 20  # five separate blobs, not one
    with pytest.raises(ValueError, match="do not match"):
        plot_embedding(features, labels[:10], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least 3 points"):
        plot_embedding(features[:2], labels[:2], tmp_path / "bad.png")


@pytest.mark.parametrize("clustered", [False, True])
def test_training_curves_legends_do_not_cover_the_curves(tmp_path, monkeypatch, clustered):
    from pyreid.evaluation.visualize import pyplot
    from pyreid.training.plots import plot_training_curves

    history = [{"epoch": 0, "mAP": 0.1, "rank1": 0.2}]
    for e in range(1, 6):
        history.append({"epoch": e, "loss": 5 / e, "loss_id": 3 / e, "loss_triplet": 2 / e, "mAP": 0.1 + 0.1 * e,
                        "rank1": 0.2 + 0.1 * e})
        if clustered:
            history[-1].update(num_clusters=20 + e, num_outliers=30 - e, ari=0.1 * e, nmi=0.1 * e, precision=0.5,
                               recall=0.4)
    plt = pyplot()
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))  # keep the figure to measure it
    plot_training_curves(history, tmp_path / "curves.png")
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == (3 if clustered else 2)
    for ax, legend in legends:
        box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.y1 <= area.y0, "the legend overlaps the plotting area"
        assert area.x0 - 5 <= box.x0 and box.x1 <= area.x1 + 5
    assert Image.open(tmp_path / "curves.png").size == ((1600 if clustered else 1100), 460)
    monkeypatch.undo()
    plt.close(fig)
