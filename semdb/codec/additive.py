"""The additive shared-codebook quantiser: semdb's codec.

x_hat = b + sum_m P_m C[k_m] with ONE codebook C (K x d) shared by all M slots. Each slot's
decoder P_m = s_m * B_j is a scaled orthonormal D x d block: B_j is the j-th "column" of d
directions inside a band of principal directions, and several slots ("stages") may share a
column to spend more bits where the embeddings vary most. Because the decoder is additive,
<q, x_hat> = <q, b> + sum_m LUT[m, k_m] with LUT[m, k] = s_m <B_j^T q, C[k]>, exact ADC.

Training (numpy + FAISS k-means, seconds on a CPU):
1. centre on the mean b, PCA of the training embeddings;
2. water-filling: give each principal direction a number of stages from its variance so that
   the M slots go where they buy the most distortion reduction (reverse water-filling for a
   Gaussian source), grouped into bands of equal stage count;
3. a seeded random rotation inside each band spreads its variance evenly over its columns, so
   every slot sees an isotropic sub-vector and one shared codebook fits them all;
4. k-means initialises C on the pooled, scale-normalised sub-vectors; then Lloyd iterations
   alternate exact encoding (beam search over a column's stages) with closed-form updates of
   C and the slot scales, restarting dead codewords, stopping early on a validation split.

The encoder is the search itself: for a fixed additive decoder, beam search finds (near-)
optimal indices, which a neural encoder could only approximate (see docs/notes/CODEC.md).

Where text queries look (issue 12, used by codec.py): `query_metric_sqrt` (train in the
queries' metric), `ridge_map` / `text_mixture` (each image's predicted text direction, from
paired or unpaired texts) and `refine_anisotropic` (score-aware re-encoding on the fixed
decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..progress import report


@dataclass
class Layout:
    """Which column and stage each slot is, in code order."""

    d: int
    col: np.ndarray  # (M,) int: column (block of d directions of B) that slot m decodes into
    stage: np.ndarray  # (M,) int: 0 for the first pass over its column, 1 for the next...

    @property
    def m(self) -> int:
        return len(self.col)

    @property
    def n_cols(self) -> int:
        return int(self.col.max()) + 1


def plan_layout(variances: np.ndarray, m: int, k: int, d: int) -> tuple[Layout, list[tuple[int, int]]]:
    """Greedy reverse water-filling of M slots over groups of d principal directions.

    Each slot added to a group of d directions with variance v cuts its distortion by a factor
    2**(-2 * log2(k) / d) (high-rate Gaussian approximation). Greedily adding the slot that cuts
    the most distortion gives the classic water-filling allocation. Groups are then merged into
    bands of equal stage count (a band is rotated as a whole). Returns the layout and the bands
    as (first direction, end direction) so the caller can rotate within each band.
    """
    n_groups = len(variances) // d
    if n_groups == 0:
        raise ValueError(f"sub-vector dim d={d} is larger than the embedding dim {len(variances)}")
    group_var = variances[: n_groups * d].reshape(n_groups, d).sum(axis=1)
    gain = 2.0 ** (-2.0 * np.log2(k) / d)
    stages = np.zeros(n_groups, dtype=int)
    remaining = group_var.copy()
    for _ in range(m):
        g = int(np.argmax(remaining * (1 - gain)))
        stages[g] += 1
        remaining[g] *= gain
    # Variances are sorted descending, so stage counts are (nearly) non-increasing; sorting the
    # groups by stage count keeps each band contiguous in principal-direction order.
    order = np.argsort(-stages, kind="stable")
    order = order[stages[order] > 0]
    bands, col, stage = [], [], []
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and stages[order[j]] == stages[order[i]]:
            j += 1
        bands.append([int(g) for g in order[i:j]])
        i = j
    band_dirs = []
    c = 0
    for groups in bands:
        s = stages[groups[0]]
        for _ in groups:
            for t in range(s):
                col.append(c)
                stage.append(t)
            c += 1
        band_dirs.append(np.concatenate([np.arange(g * d, (g + 1) * d) for g in groups]))
    layout = Layout(d=d, col=np.array(col), stage=np.array(stage))
    return layout, band_dirs


def pca(X: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Principal variances (descending, >= 0) and directions (columns) of X around `mean`."""
    cov = np.atleast_2d(np.cov((X - mean).T.astype(np.float64)))
    evals, evecs = np.linalg.eigh(cov)
    return np.clip(evals[::-1], 0, None), evecs[:, ::-1]


def build_basis(evecs: np.ndarray, band_dirs: list[np.ndarray], rng) -> np.ndarray:
    """Orthonormal D x (n_cols * d) basis: principal directions, randomly rotated within bands."""
    blocks = []
    for dirs in band_dirs:
        q, r = np.linalg.qr(rng.standard_normal((len(dirs), len(dirs))))
        q *= np.sign(np.diag(r))  # a Haar-random rotation, deterministic for the seed
        blocks.append(evecs[:, dirs] @ q)
    return np.concatenate(blocks, axis=1).astype(np.float32)


EXHAUSTIVE = 4096  # joint choices per column searched exactly rather than by beam


def encode_columns(Z: np.ndarray, layout: Layout, scale: np.ndarray, C: np.ndarray, beam: int) -> np.ndarray:
    """Exact-as-affordable encoding of each column's stages.

    Z: (n, n_cols, d) coordinates of x - b in the basis. Columns are orthogonal, so each column
    is encoded independently. Within a column the stages form a residual quantiser: when its
    K**stages joint choices are few (<= EXHAUSTIVE) the best one is found exactly with one
    matrix product against all their sums; otherwise by beam search.
    Returns (n, M) int64 indices in slot order.
    """
    n = Z.shape[0]
    K, d = C.shape
    codes = np.zeros((n, layout.m), dtype=np.int64)
    c_sq = (C * C).sum(1)
    for c in range(layout.n_cols):
        slots = np.flatnonzero(layout.col == c)
        slots = slots[np.argsort(layout.stage[slots])]
        if K ** len(slots) <= EXHAUSTIVE:
            # Every joint choice (k_1..k_s) as one table row: sum_t scale_t C[k_t], first stage
            # in the slowest-varying digit. argmin ||z - v||^2 = argmax (z.v - ||v||^2 / 2).
            combos = np.zeros((1, d), dtype=np.float32)
            for m in slots:
                combos = (combos[:, None, :] + scale[m] * C[None, :, :]).reshape(-1, d)
            best = np.argmax(Z[:, c, :] @ combos.T - 0.5 * (combos * combos).sum(1), axis=1)
            for m in slots[::-1]:
                best, codes[:, m] = np.divmod(best, K)
            continue
        target = Z[:, c, :]  # (n, d)
        # Beam state: partial reconstruction (n, B, d), chosen indices (n, B, t), error (n, B)
        recon = np.zeros((n, 1, d), dtype=np.float32)
        chosen = np.zeros((n, 1, 0), dtype=np.int64)
        for m in slots:
            cw = scale[m] * C  # (K, d)
            resid = target[:, None, :] - recon  # (n, B, d)
            # ||resid - cw||^2 = ||resid||^2 - 2 resid.cw + ||cw||^2
            err = (resid * resid).sum(-1)[:, :, None] - 2 * resid @ cw.T + (scale[m] ** 2) * c_sq
            b_now = err.shape[1]
            flat = err.reshape(n, b_now * K)
            keep = min(beam, b_now * K)
            top = (
                np.argpartition(flat, keep - 1, axis=1)[:, :keep]
                if keep < flat.shape[1]
                else np.tile(np.arange(flat.shape[1]), (n, 1))
            )
            parent, k = np.divmod(top, K)
            rows = np.arange(n)[:, None]
            recon = recon[rows, parent] + cw[k]
            chosen = np.concatenate([chosen[rows, parent], k[:, :, None]], axis=2)
            last_err = flat[rows, top]
        best = np.argmin(last_err, axis=1)
        codes[:, slots] = chosen[np.arange(n), best]
    return codes


def decode_coords(codes: np.ndarray, layout: Layout, scale: np.ndarray, C: np.ndarray) -> np.ndarray:
    """(n, M) indices -> (n, n_cols, d) coordinates in the basis."""
    n = codes.shape[0]
    contrib = scale[None, :, None] * C[codes]  # (n, M, d)
    col = layout.col
    if n and len(col) and col[0] == 0 and (np.diff(col) == 1).sum() == layout.n_cols - 1 and (np.diff(col) >= 0).all():
        # plan_layout emits each column's stages side by side: one segmented sum (the hot path
        # of the cosine rerank, ~10x faster than np.add.at)
        starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
        return np.add.reduceat(contrib, starts, axis=1).astype(np.float32, copy=False)
    Z = np.zeros((n, layout.n_cols, C.shape[1]), dtype=np.float32)
    np.add.at(Z, (slice(None), col), contrib)
    return Z


def lloyd_update(Z: np.ndarray, codes: np.ndarray, layout: Layout, scale: np.ndarray, C: np.ndarray, rng):
    """Closed-form refit of the shared codebook and slot scales for fixed assignments.

    For slot m with index k, its ideal contribution is the column's target minus the other
    stages' contributions; dividing by the scale puts all slots on the codebook's scale. The
    new C[k] is the mean of those normalised targets; the new scale the least-squares one.
    Codewords nobody uses are restarted on the worst-fitted targets (dead-codeword restart).
    """
    K, d = C.shape
    recon = decode_coords(codes, layout, scale, C)
    targets = np.empty((codes.shape[0], layout.m, d), dtype=np.float32)
    for m in range(layout.m):
        c = layout.col[m]
        own = scale[m] * C[codes[:, m]]
        targets[:, m] = Z[:, c] - recon[:, c] + own
    # Scale: least squares of target ~ s * C[k] per slot.
    cw = C[codes]  # (n, M, d)
    num = (targets * cw).sum((0, 2))
    den = (cw * cw).sum((0, 2)) + 1e-12
    new_scale = np.maximum(num / den, 1e-6).astype(np.float32)
    normed = (targets / new_scale[None, :, None]).reshape(-1, d)
    flat_codes = codes.reshape(-1)
    counts = np.bincount(flat_codes, minlength=K)
    sums = np.zeros((K, d), dtype=np.float64)
    np.add.at(sums, flat_codes, normed)
    new_C = C.copy()
    used = counts > 0
    new_C[used] = (sums[used] / counts[used, None]).astype(np.float32)
    dead = np.flatnonzero(~used)
    if len(dead):
        err = ((normed - new_C[flat_codes]) ** 2).sum(1)
        worst = np.argsort(-err)[: len(dead) * 4]
        pick = rng.choice(worst, size=len(dead), replace=False)
        new_C[dead] = normed[pick] + 1e-3 * rng.standard_normal((len(dead), d)).astype(np.float32)
    return new_C, new_scale, int(len(dead))


def kmeans(points: np.ndarray, k: int, seed: int, niter: int = 25) -> np.ndarray:
    import faiss  # FAISS's k-means: fast, seeded, and the field's reference implementation  # noqa: PLC0415 - 0.2 s to import; `import semdb` must not load faiss

    points = np.ascontiguousarray(points, dtype=np.float32)
    if len(points) < k:  # too few points: pad by jittered copies so every codeword starts distinct
        rng = np.random.default_rng(seed)
        extra = points[rng.integers(0, len(points), k - len(points))]
        points = np.concatenate([points, extra + 1e-2 * rng.standard_normal(extra.shape).astype(np.float32)])
    km = faiss.Kmeans(
        points.shape[1],
        k,
        niter=niter,
        seed=seed,
        verbose=False,
        max_points_per_centroid=1 << 20,
        min_points_per_centroid=1,
    )  # few points is expected for tiny stores: no warning
    km.train(points)
    return km.centroids.copy()


def train_additive(
    X: np.ndarray,
    m: int,
    k: int,
    d: int,
    seed: int = 0,
    beam: int = 16,
    max_iters: int = 20,
    val_fraction: float = 0.1,
    max_fit: int | None = None,
    progress=None,
    stage: str = "training codec",
) -> dict:
    """Fit the additive codec to unit embeddings X (n, D). Returns its parameters.

    Mean, PCA and allocation use every training row; the Lloyd iterations use at most
    `max_fit` of them (the shared codebook still sees max_fit * M sub-vectors).
    """
    rng = np.random.default_rng(seed)
    n, D = X.shape
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction)) if n >= 50 else 0
    val, fit = X[perm[:n_val]], X[perm[n_val:]]
    mean = fit.mean(0).astype(np.float32)
    evals, evecs = pca(fit, mean)
    layout, band_dirs = plan_layout(evals, m, k, d)
    basis = build_basis(evecs, band_dirs, rng)

    def coords(A):
        return ((A - mean) @ basis).reshape(len(A), layout.n_cols, d)

    if max_fit and len(fit) > max_fit:
        fit = fit[rng.choice(len(fit), max_fit, replace=False)]
        val = val[: max(1, max_fit // 10)] if n_val else val
    Zfit, Zval = coords(fit), coords(val)
    # Initial scales: a column's RMS norm, shrinking geometrically with the stage (each stage
    # removes about the distortion factor 2**(-2 log2 K / d) of what is left).
    col_rms = np.sqrt((Zfit**2).sum(2).mean(0)) + 1e-8
    shrink = np.sqrt(2.0 ** (-2.0 * np.log2(k) / d))
    scale = (col_rms[layout.col] * shrink**layout.stage).astype(np.float32)
    first = layout.stage == 0
    C = kmeans((Zfit[:, layout.col[first]] / scale[first][None, :, None]).reshape(-1, d), k, seed)

    def distortion(Z):
        if len(Z) == 0:
            return 0.0
        codes = encode_columns(Z, layout, scale, C, beam)
        return float(((Z - decode_coords(codes, layout, scale, C)) ** 2).sum((1, 2)).mean())

    best = (distortion(Zval if n_val else Zfit), C, scale)
    stale, dead_total = 0, 0
    for it in range(max_iters):
        codes = encode_columns(Zfit, layout, scale, C, beam)
        C, scale, dead = lloyd_update(Zfit, codes, layout, scale, C, rng)
        dead_total += dead
        score = distortion(Zval if n_val else Zfit)
        report(progress, stage, it + 1, max_iters)
        if score < best[0]:
            improved = score < best[0] * (1 - 5e-4)  # below 0.05% a step is not worth its time
            best, stale = (score, C, scale), (0 if improved else stale + 1)
        else:
            stale += 1
        if stale >= 3:  # early stop: validation distortion stopped improving
            break
    _, C, scale = best
    return dict(
        mean=mean,
        basis=basis,
        col=layout.col,
        stage=layout.stage,
        scale=scale,
        codebook=C,
        d=d,
        k=k,
        beam=beam,
        iters=it + 1,
        dead_restarts=dead_total,
    )


# --------------------------------------------------------------------------------------------
# Where text queries look (docs/notes/CODEC.md, "Spending the bits where queries look")


def query_metric_sqrt(Q: np.ndarray, shrink: float) -> np.ndarray:
    """S^(1/2) of the query metric S = (1 - shrink) E[q q^T] * D / tr + shrink * I.

    The error that moves a score <q, x_hat> is q.e, so the ranking-relevant distortion over a
    query distribution is E[(q.e)^2] = e^T E[q q^T] e. Quantising y = x S^(1/2) with plain MSE
    minimises e^T S e. Shrinking towards I keeps every direction some weight (image queries,
    and text queries unlike the sample)."""
    D = Q.shape[1]
    S = (Q.T.astype(np.float64) @ Q) / len(Q)
    S = (1.0 - shrink) * S * (D / max(np.trace(S), 1e-12)) + shrink * np.eye(D)
    w, V = np.linalg.eigh(S)
    return ((V * np.sqrt(np.clip(w, 1e-9, None))) @ V.T).astype(np.float32)


def ridge_map(X: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """A (D x D) minimising ||X A - Y||^2 + lam ||A||^2: predicts a text direction from an image."""
    X = X.astype(np.float64)
    return np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ Y.astype(np.float64)).astype(np.float32)


def text_mixture(X: np.ndarray, Q: np.ndarray, tau: float, batch: int = 4096) -> np.ndarray:
    """Each image's predicted text direction from an UNPAIRED bag of texts: the softmax(x.q / tau)
    weighted mean of the bag, unit length."""
    out = np.empty((len(X), Q.shape[1]), np.float32)
    for i in range(0, len(X), batch):
        S = X[i : i + batch] @ Q.T / tau
        S -= S.max(1, keepdims=True)
        P = np.exp(S)
        P /= P.sum(1, keepdims=True)
        out[i : i + batch] = P @ Q
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


REFINE_COMBOS = 256  # score-aware re-encoding revisits columns of at most this many joint choices


def column_combos(
    layout: Layout, scale: np.ndarray, C: np.ndarray, limit: int = REFINE_COMBOS
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Per column: its slots (stage order) and every joint choice's sum (K**stages, d), or None
    for a column with more than `limit` joint choices (measured: revisiting the 4096-choice
    three-stage columns too doubles the encoding time and changes R@1 by < 0.003)."""
    K, d = C.shape
    out = []
    for c in range(layout.n_cols):
        slots = np.flatnonzero(layout.col == c)
        slots = slots[np.argsort(layout.stage[slots])]
        if K ** len(slots) > limit:
            out.append((slots, None))
            continue
        V = np.zeros((1, d), dtype=np.float32)
        for m in slots:
            V = (V[:, None, :] + scale[m] * C[None, :, :]).reshape(-1, d)
        out.append((slots, V))
    return out


def refine_anisotropic(
    Z: np.ndarray,
    W: np.ndarray,
    r: np.ndarray,
    codes: np.ndarray,
    layout: Layout,
    scale: np.ndarray,
    C: np.ndarray,
    eta: float,
    sweeps: int,
    combos=None,
) -> np.ndarray:
    """Score-aware re-encoding (ScaNN's anisotropic loss, on a fixed additive decoder).

    Minimises ||z - z_hat||^2 + (eta - 1) (w.(z - z_hat) + r)^2 per item by coordinate descent
    over columns, each column's joint choice searched exhaustively (a column with more joint
    choices than column_combos' limit keeps its MSE code). w is the item's predicted query direction in
    the coordinates, r its part outside the coded subspace (a constant of the item's error).
    Starts from `codes` (the MSE codes); each step can only lower the loss."""
    codes = codes.copy()
    if Z.shape[0] == 0:
        return codes
    K = C.shape[0]
    combos = combos if combos is not None else column_combos(layout, scale, C)
    E = Z - decode_coords(codes, layout, scale, C)
    s = (W * E).sum((1, 2)) + r
    for _ in range(sweeps):
        for c, (slots, V) in enumerate(combos):
            if V is None:
                continue
            z, w = Z[:, c], W[:, c]
            s_other = s - (w * E[:, c]).sum(1)
            err = (z * z).sum(1)[:, None] - 2.0 * (z @ V.T) + (V * V).sum(1)[None, :]
            proj = (w * z).sum(1)[:, None] - w @ V.T
            best = np.argmin(err + (eta - 1.0) * (s_other[:, None] + proj) ** 2, axis=1)
            b = best
            for m in slots[::-1]:
                b, codes[:, m] = np.divmod(b, K)
            E[:, c] = z - V[best]
            s = s_other + (w * E[:, c]).sum(1)
    return codes
