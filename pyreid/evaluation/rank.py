"""CMC, mAP and mINP under the Market-1501 protocol, computed per query chunk.

The usual implementation (torchreid's ``eval_market1501``) argsorts the whole
Q x G distance matrix and builds a Q x G int64 match matrix: two 7.7 GB
matrices at MSMT17 test scale (11,659 x 82,161). Here the work goes through
chunks of query rows and never needs the gallery order itself: the rank of a
correct match only depends on how many kept gallery items come before it, and
that count is a binary search of the match's distance in the row's sorted
distances. So per chunk we sort the distance *values* (no index tensor), find
the few true matches by comparing identities and cameras, and look their
distances up. Memory beyond the input is a few chunk x G buffers.

Ordering (ties). Gallery items are ranked by ascending distance; equal
distances are ordered by gallery index, as a stable sort would order them.
Results therefore never depend on the sorting algorithm.
"""

from typing import Dict, Optional, Tuple, Union
import warnings

import numpy as np
import torch

__all__ = ["evaluate_rank", "evaluate"]

ArrayLike = Union[np.ndarray, torch.Tensor]

AP_MODES = ("standard", "trapezoid")


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)  # shares memory, no copy
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"evaluate_rank: {name} must be a numpy array or a torch tensor, got {type(x).__name__}") from exc


def _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids):
    distmat = _as_tensor(distmat, "distmat")
    if distmat.dim() != 2:
        raise ValueError(f"evaluate_rank: distmat must be 2-D (queries x gallery), got shape {tuple(distmat.shape)}")
    if not distmat.is_floating_point():
        raise TypeError(f"evaluate_rank: distmat must be floating point, got {distmat.dtype}")
    num_q, num_g = distmat.shape
    labels = []
    for name, value, n in (("q_pids", q_pids, num_q), ("g_pids", g_pids, num_g),
                           ("q_camids", q_camids, num_q), ("g_camids", g_camids, num_g)):
        t = _as_tensor(value, name).reshape(-1)
        if t.numel() != n:
            raise ValueError(
                f"evaluate_rank: {name} has {t.numel()} entries but distmat has shape {tuple(distmat.shape)} "
                f"(expected {n})"
            )
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"evaluate_rank: {name} must hold integers, got {t.dtype}")
        labels.append(t.to(device=distmat.device, dtype=torch.int64))
    if num_q == 0 or num_g == 0:
        raise ValueError(f"evaluate_rank: empty distmat of shape {tuple(distmat.shape)}")
    return distmat, labels


def _sorted_rows(chunk: torch.Tensor, buffer: Optional[np.ndarray] = None) -> torch.Tensor:
    """Each row's values in ascending order (values only: no index tensor; NaN last).

    On CPU the rows are sorted in ``buffer`` (reused across chunks, so its
    pages are touched once) when it is given and large enough."""
    if chunk.device.type != "cpu":
        return torch.sort(chunk, dim=1).values
    # numpy's SIMD sort of values is several times faster than torch.sort on
    # CPU (which also fills an int64 index tensor); it releases the GIL, so
    # blocks of rows sort in parallel threads, in place.
    values = chunk.numpy()
    if buffer is not None and buffer.dtype == values.dtype and buffer.size >= values.size:
        out = buffer.reshape(-1)[:values.size].reshape(values.shape)
        np.copyto(out, values)
    else:
        out = values.copy()
    workers = max(1, min(torch.get_num_threads(), out.shape[0]))
    bounds = np.linspace(0, out.shape[0], workers + 1).astype(int)
    if workers == 1:
        out.sort(axis=1)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda ab: out[ab[0]:ab[1]].sort(axis=1), zip(bounds[:-1], bounds[1:])))
    return torch.from_numpy(out)


class _GalleryByIdentity:
    """Gallery indices grouped by identity, so a query's same-identity items
    are found by a lookup instead of a comparison with the whole gallery."""

    def __init__(self, g_pids: torch.Tensor, g_cams: torch.Tensor):
        self.g_pids, self.g_cams = g_pids, g_cams
        self.order = torch.sort(g_pids, stable=True).indices  # ascending gallery index within a group
        self.pids, self.counts = torch.unique_consecutive(g_pids[self.order], return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def same_identity(self, q_pids: torch.Tensor, q_cams: torch.Tensor):
        """(row, gallery index, same camera) of every (query, gallery item) pair of one identity,
        listed row by row, gallery indices ascending."""
        pos = torch.searchsorted(self.pids, q_pids).clamp_max(self.pids.numel() - 1)
        found = self.pids[pos] == q_pids
        lengths = torch.where(found, self.counts[pos], 0)
        rows = torch.repeat_interleave(torch.arange(q_pids.numel(), device=q_pids.device), lengths)
        first_pair = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(rows.numel(), device=q_pids.device) - first_pair[rows]
        cols = self.order[self.starts[pos][rows] + offset]
        return rows, cols, self.g_cams[cols] == q_cams[rows]


def _padded_table(rows, values, num_rows, fill):
    """Scatter a row-by-row list into a num_rows x (longest row) table padded with `fill`."""
    counts = torch.bincount(rows, minlength=num_rows)
    width = max(1, int(counts.max())) if rows.numel() else 1
    slot = torch.arange(rows.numel(), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    table = torch.full((num_rows, width), fill, dtype=values.dtype, device=values.device)
    table[rows, slot] = values
    return table, slot, counts


def _chunk_match_ranks(dist: torch.Tensor, q_pids, q_cams, gallery: _GalleryByIdentity, buffer=None):
    """Ranks of the true matches of each query of a chunk.

    Returns ``(ranks, num_hits)``: ranks is B x H (H = max(1, the most matches
    of any query in the chunk)), each row the 1-based positions of that
    query's matches in its ranking with junk removed, ascending, padded with
    ``num_gallery + 1``; num_hits is B (0 for queries without a match).
    """
    num_b, num_g = dist.shape
    rows, cols, same_cam = gallery.same_identity(q_pids, q_cams)
    hit_row, hit_col = rows[~same_cam], cols[~same_cam]  # same identity, another camera: a match
    junk_row, junk_col = rows[same_cam], cols[same_cam]  # same identity and camera: removed
    hit_dist = dist[hit_row, hit_col]

    sorted_all = _sorted_rows(dist, buffer)
    if torch.isnan(sorted_all[:, -1]).any():  # NaN sorts last
        raise ValueError("evaluate_rank: distmat contains NaN")
    # +inf pads sort last and are never counted as "smaller" by a left search.
    table, slot, num_hits = _padded_table(hit_row, hit_dist, num_b, float("inf"))
    smaller_all = torch.searchsorted(sorted_all, table, side="left")
    not_larger_all = torch.searchsorted(sorted_all, table, side="right")
    junk_dist = dist[junk_row, junk_col]
    junk_table, _, _ = _padded_table(junk_row, junk_dist, num_b, float("inf"))
    smaller_junk = torch.searchsorted(torch.sort(junk_table, dim=1).values, table, side="left")

    # position = kept items strictly closer + kept items at the same distance
    # with a smaller gallery index (the stable-sort tie rule) + 1.
    before = (smaller_all - smaller_junk)[hit_row, slot]
    tied = (not_larger_all - smaller_all)[hit_row, slot] > 1  # another item shares this distance
    if bool(tied.any()):
        before[tied] += _tied_before(dist, hit_row[tied], hit_col[tied], hit_dist[tied],
                                     (junk_row, junk_col, junk_dist))

    ranks = torch.full((num_b, table.shape[1]), num_g + 1, dtype=torch.int64, device=dist.device)
    ranks[hit_row, slot] = before + 1
    return torch.sort(ranks, dim=1).values, num_hits


def _tied_before(dist, rows, cols, values, junk, rows_per_step: int = 64):
    """For each match, the kept items with exactly its distance and a smaller gallery index.

    Only matches whose distance occurs more than once in their row come here
    (rare on real-valued distances; every match for integer-valued ones), and
    each costs a pass over the row up to its own column."""
    counts = []
    steps = [slice(start, start + rows_per_step) for start in range(0, rows.numel(), rows_per_step)]
    for step in steps:
        r, c, v = rows[step], cols[step], values[step]
        width = int(c.max())
        positions = torch.arange(width, device=dist.device)
        earlier_equal = (dist[r, :width] == v[:, None]) & (positions[None, :] < c[:, None])
        counts.append(earlier_equal.sum(dim=1))
    counts = torch.cat(counts)
    # Junk items (same identity and camera) at that distance before it are not in the ranking.
    junk_row, junk_col, junk_dist = junk
    if junk_row.numel():
        for step in steps:
            r, c, v = rows[step], cols[step], values[step]
            earlier_junk = ((junk_row[None, :] == r[:, None]) & (junk_dist[None, :] == v[:, None])
                            & (junk_col[None, :] < c[:, None]))
            counts[step] -= earlier_junk.sum(dim=1)
    return counts


def _query_scores(ranks: torch.Tensor, num_hits: torch.Tensor, ap: str):
    """AP, INP and first-match rank of each query from its sorted match ranks."""
    valid = torch.arange(ranks.shape[1], device=ranks.device)[None, :] < num_hits[:, None]
    hits_so_far = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)[None, :]
    rank_f = ranks.to(torch.float64)
    precision = hits_so_far / rank_f
    n = num_hits.clamp_min(1).to(torch.float64)
    if ap == "standard":
        ap_values = torch.where(valid, precision, 0.0).sum(dim=1) / n
    else:
        # Trapezoid rule of the official Market-1501 script: recall rises by
        # 1/n at each match and the area uses the mean of the precision just
        # before the match (hits-1 over rank-1; 1 at rank 1) and at the match.
        before = torch.where(ranks > 1, (hits_so_far - 1) / (rank_f - 1).clamp_min(1), 1.0)
        ap_values = torch.where(valid, (before + precision) / 2, 0.0).sum(dim=1) / n
    last = ranks.gather(1, (num_hits - 1).clamp_min(0)[:, None]).squeeze(1)
    inp = num_hits.to(torch.float64) / last.to(torch.float64)
    first = ranks[:, 0]
    return ap_values, inp, first


def _scores(distmat, q_pids, g_pids, q_camids, g_camids, ap, chunk_size):
    if ap not in AP_MODES:
        raise ValueError(f"evaluate_rank: unknown ap mode '{ap}'; expected 'standard' or 'trapezoid'")
    if chunk_size < 1:
        raise ValueError(f"evaluate_rank: chunk_size must be >= 1, got {chunk_size}")
    distmat, (q_pids, g_pids, q_camids, g_camids) = _check_inputs(distmat, q_pids, g_pids, q_camids, g_camids)
    if distmat.dtype in (torch.float16, torch.bfloat16):
        compute_dtype = torch.float32  # exact widening: order and ties unchanged
    else:
        compute_dtype = distmat.dtype
    gallery = _GalleryByIdentity(g_pids, g_camids)
    buffer = None
    if distmat.device.type == "cpu":
        buffer = np.empty((min(chunk_size, distmat.shape[0]), distmat.shape[1]),
                          dtype=torch.empty((), dtype=compute_dtype).numpy().dtype)
    aps, inps, firsts, valids = [], [], [], []
    for start in range(0, distmat.shape[0], chunk_size):
        stop = min(start + chunk_size, distmat.shape[0])
        chunk = distmat[start:stop].to(compute_dtype).contiguous()
        ranks, num_hits = _chunk_match_ranks(chunk, q_pids[start:stop], q_camids[start:stop], gallery, buffer)
        valid = num_hits > 0
        ap_values, inp, first = _query_scores(ranks, num_hits, ap)
        aps.append(ap_values[valid])
        inps.append(inp[valid])
        firsts.append(first[valid])
        valids.append(valid)
    num_valid = int(sum(int(v.sum()) for v in valids))
    if num_valid == 0:
        raise ValueError(
            "evaluate_rank: no query has a correct match in the gallery (same identity seen by another "
            "camera), so CMC and mAP are undefined; check that q_pids/g_pids and q_camids/g_camids "
            "belong to the same data set split"
        )
    return torch.cat(aps), torch.cat(inps), torch.cat(firsts), num_valid, distmat.shape[1]


def _cmc(first: torch.Tensor, max_rank: int, num_g: int) -> np.ndarray:
    if num_g < max_rank:
        warnings.warn(f"evaluate_rank: only {num_g} gallery items, so max_rank is lowered to {num_g}")
        max_rank = num_g
    counts = torch.bincount(first.clamp_max(max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    cmc = torch.cumsum(counts, 0).to(torch.float64) / first.numel()
    return cmc.cpu().numpy().astype(np.float32)


def evaluate_rank(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike,
                  g_camids: ArrayLike, max_rank: int = 50, ap: str = "standard",
                  chunk_size: int = 256) -> Tuple[np.ndarray, float]:
    """CMC curve and mAP of a query x gallery distance matrix (Market-1501 protocol).

    For each query, gallery items with the same identity **and** the same
    camera are removed; the remaining ones are ranked by ascending distance,
    ties by gallery index (the order of a stable sort). A *match* is a gallery
    item of the query's identity (so it comes from another camera). Queries
    without any match are skipped.

    - CMC[r] = fraction of the valid queries whose first match has rank <= r + 1.
    - ``ap="standard"``: AP = mean over the matches of the precision at that
      match (hits so far / rank), i.e. non-interpolated average precision, as
      torchreid and fast-reid compute it.
    - ``ap="trapezoid"``: the official Market-1501 evaluation (MATLAB, and its
      Python ports): AP = sum over the matches i = 1..n of
      ``(1/n) * (p_before + p_at) / 2`` where ``p_at = i / rank_i`` and
      ``p_before = (i - 1) / (rank_i - 1)`` is the precision one position
      earlier (1 when the match is ranked first). It integrates precision over
      recall with the trapezoid rule and is never lower than the standard AP.

    mAP is the mean over the valid queries. The work runs in chunks of
    ``chunk_size`` query rows on the device of ``distmat`` (numpy arrays and
    CPU tensors on the CPU, CUDA tensors on their GPU); it never builds a
    Q x G index or match matrix.

    Args:
        distmat: Q x G distances (numpy array or tensor; float16/bfloat16/
            float32/float64; NaN is an error).
        q_pids, g_pids, q_camids, g_camids: integer identities and cameras of
            the queries (Q) and gallery items (G).
        max_rank: length of the returned CMC curve (lowered to G, with a
            warning, for a smaller gallery).
        ap: ``"standard"`` or ``"trapezoid"``.
        chunk_size: query rows processed together; the extra memory is a few
            ``chunk_size x G`` buffers.

    Returns:
        ``(cmc, mAP)``: a float32 numpy array of length max_rank and a float.

    Raises:
        ValueError: if no query has a match (nothing to average).

    Example:
        >>> import numpy as np
        >>> from pyreid.evaluation import evaluate_rank
        >>> d = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
        >>> cmc, mAP = evaluate_rank(d, np.array([1]), np.array([2, 1, 1]), np.array([0]), np.array([1, 1, 1]), max_rank=3)
        >>> cmc.tolist(), round(mAP, 4)
        ([0.0, 1.0, 1.0], 0.5833)
    """
    aps, _, first, _, num_g = _scores(distmat, q_pids, g_pids, q_camids, g_camids, ap, chunk_size)
    return _cmc(first, max_rank, num_g), float(aps.mean())


def evaluate(distmat: ArrayLike, q_pids: ArrayLike, g_pids: ArrayLike, q_camids: ArrayLike, g_camids: ArrayLike,
             max_rank: int = 50, ap: str = "standard", chunk_size: int = 256) -> Dict[str, object]:
    """All the usual re-ID scores of a distance matrix, as a dict.

    Same protocol, ordering and arguments as :func:`evaluate_rank`. Keys:
    ``mAP``, ``mINP`` (mean inverse negative penalty, Ye et al. 2021: for each
    query, number of matches / rank of its last match, i.e. how much of the
    ranking must be checked to find them all), ``rank1``, ``rank5``,
    ``rank10`` (fractions in [0, 1]), ``cmc`` (float32 array of length
    max_rank) and ``num_valid_queries``.

    Example:
        >>> import numpy as np
        >>> from pyreid.evaluation import evaluate
        >>> d = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
        >>> r = evaluate(d, np.array([1]), np.array([2, 1, 1]), np.array([0]), np.array([1, 1, 1]), max_rank=3)
        >>> round(r["mAP"], 4), round(r["mINP"], 4), r["rank1"]
        (0.5833, 0.6667, 0.0)
    """
    aps, inps, first, num_valid, num_g = _scores(distmat, q_pids, g_pids, q_camids, g_camids, ap, chunk_size)
    result: Dict[str, object] = {"mAP": float(aps.mean()), "mINP": float(inps.mean())}
    for k in (1, 5, 10):
        result[f"rank{k}"] = float((first <= k).double().mean())
    result["cmc"] = _cmc(first, max_rank, num_g)
    result["num_valid_queries"] = num_valid
    return result
