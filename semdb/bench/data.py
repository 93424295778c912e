"""Benchmark inputs: loading an embeddings file (.npz / .parquet), validation, and the split.

Everything the benchmark evaluates is a :class:`BenchData`: image embeddings plus whatever the
data allows (paired text embeddings, labels, class prompts for zero-shot) and, for the image
folder path, pre-computed *variants* (embeddings of re-encoded images, e.g. JPEG q10) that are
evaluated as extra methods at their real file sizes.

Validation errors raise :class:`semdb.errors.InputError` with one line naming the array or
argument and what to do.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import InputError
from ..rows import unit_rows

#: Arrays the benchmark understands; any other array in a file is ignored.
KNOWN_ARRAYS = ("image_emb", "text_emb", "label", "class_names", "class_text_emb")

#: Parquet schema-metadata keys holding the (C,)-shaped class arrays, which do not fit the
#: one-row-per-image table (see :func:`save_embeddings`).
PARQUET_META_CLASS_NAMES = b"semdb.class_names"
PARQUET_META_CLASS_TEXT_EMB = b"semdb.class_text_emb"


@dataclass
class Variant:
    """A pre-computed compressed version of every image (e.g. the embedding of the image after
    JPEG re-encoding at quality 10), evaluated as one extra method.

    ``emb`` (n, D): embedding of each re-encoded image, row-aligned with ``image_emb``;
    ``bits`` (n,): real size of each re-encoded file in bits; ``pixels`` (n,): pixel count of
    each ORIGINAL image (width * height), so that bpp is the real bits per pixel.
    """

    name: str  # method name in the results, e.g. "jpeg-q10"
    family: str  # line label in the plot, e.g. "JPEG"
    emb: np.ndarray
    bits: np.ndarray
    pixels: np.ndarray
    encode_seconds: float | None = None  # total re-encode time over all n images, if known
    note: str | None = None


@dataclass
class BenchData:
    """Validated benchmark input. Rows of ``image_emb`` (and ``text_emb``, ``class_text_emb``)
    are unit-normalised float32."""

    image_emb: np.ndarray  # (n, D) float32, unit rows
    text_emb: np.ndarray | None = None  # (n, D) float32, unit rows; row i describes image i
    label: np.ndarray | None = None  # (n,) int64 class index (into class_names if given)
    class_names: list[str] | None = None  # (C,)
    class_text_emb: np.ndarray | None = None  # (C, D) float32, unit rows
    name: str = "embeddings"  # dataset name for reports
    variants: list[Variant] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.image_emb.shape[0])

    @property
    def dim(self) -> int:
        return int(self.image_emb.shape[1])

    @property
    def has_pairs(self) -> bool:
        return self.text_emb is not None

    @property
    def has_labels(self) -> bool:
        return self.label is not None

    def take(self, rows: np.ndarray) -> BenchData:
        """The same data restricted to ``rows`` (class prompts and names kept whole)."""
        rows = np.asarray(rows, dtype=np.int64)
        share = len(rows) / max(self.n, 1)  # a variant's encode_seconds is its total over the rows it has
        variants = [
            dataclasses.replace(
                v,
                emb=v.emb[rows],
                bits=v.bits[rows],
                pixels=v.pixels[rows],
                encode_seconds=None if v.encode_seconds is None else v.encode_seconds * share,
            )
            for v in self.variants
        ]
        return dataclasses.replace(
            self,
            image_emb=self.image_emb[rows],
            text_emb=None if self.text_emb is None else self.text_emb[rows],
            label=None if self.label is None else self.label[rows],
            variants=variants,
        )

    def transformed(self, f) -> BenchData:
        """Every embedding (images, texts, class prompts, variants) mapped through ``f``."""
        return dataclasses.replace(
            self,
            image_emb=f(self.image_emb),
            text_emb=None if self.text_emb is None else f(self.text_emb),
            class_text_emb=None if self.class_text_emb is None else f(self.class_text_emb),
            variants=[dataclasses.replace(v, emb=f(v.emb)) for v in self.variants],
        )


# --------------------------------------------------------------------------------------------
# validation


def _float_matrix(arr, what: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{what}: expected a numeric (n, D) array, got dtype {a.dtype}")
    if a.ndim != 2:
        raise InputError(f"{what}: expected a 2-D (n, D) array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what}: array is empty (shape {a.shape})")
    if dim is not None and a.shape[1] != dim:
        raise InputError(f"{what}: has {a.shape[1]} dims but image_emb has {dim}; use embeddings from the same model")
    a = a.astype(np.float32, copy=True)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise InputError(
            f"{what}: {rows.size} row(s) contain NaN or inf (first: row {int(rows[0])}); remove or re-embed them"
        )
    norms = np.linalg.norm(a, axis=1)
    zero = norms <= 1e-12
    if zero.any():
        rows = np.flatnonzero(zero)
        raise InputError(f"{what}: {rows.size} row(s) are all zeros (first: row {int(rows[0])}); remove them")
    a /= norms[:, None]
    return a


def _labels(label, n: int, class_names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    lab = np.asarray(label)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise InputError(f"label: expected shape ({n},) to match image_emb, got {lab.shape}")
    if lab.dtype.kind in "US" or lab.dtype == object:
        names = [str(x) for x in lab.tolist()]
        if class_names is None:
            uniq = sorted(set(names))
            index = {c: i for i, c in enumerate(uniq)}
            return np.array([index[x] for x in names], dtype=np.int64), uniq
        index = {c: i for i, c in enumerate(class_names)}
        missing = sorted({x for x in names if x not in index})
        if missing:
            raise InputError(
                f"label: {len(missing)} label(s) not in class_names (first: {missing[0]!r}); make the names match"
            )
        return np.array([index[x] for x in names], dtype=np.int64), class_names
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or not np.all(lab == np.round(lab)):
            raise InputError("label: float labels must be whole numbers (class indices)")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iub":
        raise InputError(f"label: expected integer class indices or strings, got dtype {lab.dtype}")
    lab = lab.astype(np.int64)
    if (lab < 0).any():
        raise InputError(f"label: negative class index {int(lab.min())}; use indices 0..C-1")
    if class_names is not None and lab.max() >= len(class_names):
        raise InputError(f"label: class index {int(lab.max())} out of range for {len(class_names)} class_names")
    return lab, class_names


def validate(
    image_emb,
    text_emb=None,
    label=None,
    class_names=None,
    class_text_emb=None,
    *,
    name: str = "embeddings",
    variants: Sequence[Variant] = (),
) -> BenchData:
    """Check shapes, dtypes and finiteness; unit-normalise rows; map labels to class indices.

    Raises InputError (one line, naming the array) on any problem."""
    if image_emb is None:
        raise InputError("image_emb: missing; the embeddings file needs an (n, D) array named 'image_emb'")
    img = _float_matrix(image_emb, "image_emb")
    n, dim = img.shape
    if n < 4:
        raise InputError(f"image_emb: only {n} rows; the benchmark needs at least 4 images")
    txt = None
    if text_emb is not None:
        txt = _float_matrix(text_emb, "text_emb", dim)
        if txt.shape[0] != n:
            raise InputError(f"text_emb: has {txt.shape[0]} rows but image_emb has {n}; row i must describe image i")
    names = None
    if class_names is not None:
        cn = np.asarray(class_names)
        if cn.ndim != 1 or cn.shape[0] == 0:
            raise InputError(f"class_names: expected a non-empty 1-D array of names, got shape {cn.shape}")
        names = [str(x) for x in cn.tolist()]
        if len(set(names)) != len(names):
            raise InputError("class_names: names must be unique")
    cte = None
    if class_text_emb is not None:
        cte = _float_matrix(class_text_emb, "class_text_emb", dim)
        if names is None:
            names = [f"class_{i}" for i in range(cte.shape[0])]
        elif len(names) != cte.shape[0]:
            raise InputError(
                f"class_text_emb: has {cte.shape[0]} rows but class_names has {len(names)}; one row per class"
            )
    lab = None
    if label is not None:
        lab, names = _labels(label, n, names)
        if cte is not None and lab.max() >= cte.shape[0]:
            raise InputError(f"label: class index {int(lab.max())} out of range for {cte.shape[0]} class_text_emb rows")
    checked: list[Variant] = []
    for v in variants:
        emb = _float_matrix(v.emb, f"variant {v.name}: emb", dim)
        bits = np.asarray(v.bits, dtype=np.float64)
        pixels = np.asarray(v.pixels, dtype=np.float64)
        if emb.shape[0] != n or bits.shape != (n,) or pixels.shape != (n,):
            raise InputError(f"variant {v.name}: emb, bits and pixels must have {n} rows like image_emb")
        if not (np.isfinite(bits).all() and (bits > 0).all() and (pixels > 0).all()):
            raise InputError(f"variant {v.name}: bits and pixels must be positive and finite")
        checked.append(Variant(v.name, v.family, emb, bits, pixels, v.encode_seconds, v.note))
    return BenchData(img, txt, lab, names, cte, name=name, variants=checked)


# --------------------------------------------------------------------------------------------
# files


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if k in KNOWN_ARRAYS}
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable .npz file ({first})") from None


def _parquet_arrays(path: Path) -> dict[str, np.ndarray]:

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({first})") from None
    out: dict[str, np.ndarray] = {}
    for col in ("image_emb", "text_emb"):
        if col in table.column_names:
            c = table.column(col).combine_chunks()
            if not (pa.types.is_list(c.type) or pa.types.is_fixed_size_list(c.type) or pa.types.is_large_list(c.type)):
                raise InputError(f"{path}: column {col!r} must be a list of floats per row, got {c.type}")
            if c.null_count:
                raise InputError(f"{path}: column {col!r} has {c.null_count} null row(s)")
            lengths = np.asarray(c.value_lengths()) if not pa.types.is_fixed_size_list(c.type) else None
            if lengths is not None and lengths.size and (lengths != lengths[0]).any():
                raise InputError(f"{path}: column {col!r} rows have different lengths; every row needs D floats")
            flat = np.asarray(c.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
            n = len(c)
            if n == 0:
                out[col] = np.zeros((0, 0), np.float32)
            else:
                out[col] = flat.reshape(n, -1)
    if "label" in table.column_names:
        out["label"] = np.asarray(table.column("label").to_numpy(zero_copy_only=False))
    meta = table.schema.metadata or {}
    if PARQUET_META_CLASS_NAMES in meta:
        out["class_names"] = np.asarray(json.loads(meta[PARQUET_META_CLASS_NAMES]))
    if PARQUET_META_CLASS_TEXT_EMB in meta:
        out["class_text_emb"] = np.asarray(json.loads(meta[PARQUET_META_CLASS_TEXT_EMB]), dtype=np.float32)
    return out


def load_embeddings(path: str | Path, name: str | None = None) -> BenchData:
    """Load and validate an embeddings file (.npz or .parquet).

    .npz: arrays ``image_emb`` (n, D) and optionally ``text_emb`` (n, D), ``label`` (n,),
    ``class_names`` (C,), ``class_text_emb`` (C, D); other arrays are ignored.
    .parquet: one row per image with list<float> columns ``image_emb`` (and ``text_emb``) and an
    optional ``label`` column; ``class_names`` / ``class_text_emb`` as JSON in the schema
    metadata keys ``semdb.class_names`` / ``semdb.class_text_emb`` (:func:`save_embeddings`
    writes this layout).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"--embeddings {p}: file not found")
    if p.is_dir():
        raise InputError(f"--embeddings {p}: is a directory; give a .npz or .parquet file (or use --images)")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        arrays = _npz_arrays(p)
    elif suffix in (".parquet", ".pq"):
        arrays = _parquet_arrays(p)
    else:
        raise InputError(f"--embeddings {p}: unsupported file type {suffix!r}; use .npz or .parquet")
    if "image_emb" not in arrays:
        raise InputError(f"{p}: missing array 'image_emb' (n, D); found {sorted(arrays) or 'no known arrays'}")
    try:
        return validate(**arrays, name=name or p.stem)
    except InputError as exc:
        raise InputError(f"{p}: {exc}") from None


def save_embeddings(path: str | Path, **arrays) -> Path:
    """Write arrays in the layout :func:`load_embeddings` reads (.npz or .parquet by suffix)."""
    p = Path(path)
    unknown = set(arrays) - set(KNOWN_ARRAYS)
    if unknown:
        raise InputError(f"save_embeddings: unknown array(s) {sorted(unknown)}; known: {list(KNOWN_ARRAYS)}")
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if p.suffix.lower() == ".npz":
        np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
        return p

    cols = {}
    for col in ("image_emb", "text_emb"):
        if col in arrays:
            a = np.asarray(arrays[col], dtype=np.float32)
            cols[col] = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
    if "label" in arrays:
        cols["label"] = pa.array(np.asarray(arrays["label"]).tolist())
    meta = {}
    if "class_names" in arrays:
        meta[PARQUET_META_CLASS_NAMES] = json.dumps([str(x) for x in np.asarray(arrays["class_names"]).tolist()])
    if "class_text_emb" in arrays:
        meta[PARQUET_META_CLASS_TEXT_EMB] = json.dumps(np.asarray(arrays["class_text_emb"], dtype=np.float32).tolist())
    table = pa.table(cols)
    table = table.replace_schema_metadata(meta or None)
    pq.write_table(table, p)
    return p


# --------------------------------------------------------------------------------------------
# split


def split_indices(n: int, train_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split: ``perm = default_rng(seed).permutation(n)``; the first
    ``int(n * train_fraction)`` rows train, the rest evaluate (1126 rows, 0.5, seed 0 gives
    the 563/563 split of issue 2)."""
    if not (0.0 < float(train_fraction) < 1.0):
        raise InputError(f"--train-fraction {train_fraction}: must be strictly between 0 and 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(n * float(train_fraction))
    if n_train < 1 or n - n_train < 2:
        raise InputError(
            f"--train-fraction {train_fraction}: leaves {n_train} training and {n - n_train} held-out rows of {n}; "
            "need at least 1 and 2"
        )
    return perm[:n_train], perm[n_train:]


def cluster_labels(X: np.ndarray, groups: int, seed: int = 0) -> np.ndarray:
    """(n,) k-means cluster of every row (FAISS, seeded): the groups of an ood split, and the
    labels of 1-NN accuracy for data that has none."""
    if int(groups) < 2 or int(groups) > len(X) // 2:
        raise InputError(f"--ood-groups {groups}: need between 2 and n/2 = {len(X) // 2} clusters")
    X = np.ascontiguousarray(X, dtype=np.float32)
    km = faiss.Kmeans(X.shape[1], int(groups), niter=25, seed=int(seed), verbose=False)
    km.train(X)
    return km.index.search(X, 1)[1][:, 0].astype(np.int64)


def ood_split(
    data: BenchData, train_fraction: float = 0.5, seed: int = 0, groups: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Out-of-distribution split: whole groups train, the other groups evaluate.

    Groups are the data's classes (``label``) when it has them, else ``groups`` k-means
    clusters of ``image_emb`` (FAISS k-means, seeded). ``default_rng(seed).permutation`` of the
    groups; the first ``max(1, round(G * train_fraction))`` train. Returns (train rows, eval rows,
    the group of every row, "ood-class" or "ood-cluster")."""
    if not (0.0 < float(train_fraction) < 1.0):
        raise InputError(f"--train-fraction {train_fraction}: must be strictly between 0 and 1")
    if data.label is not None:
        group, kind = data.label, "ood-class"
    else:
        group, kind = cluster_labels(data.image_emb, groups, seed), "ood-cluster"
    present = np.unique(group)
    if len(present) < 2:
        raise InputError("--protocol ood: the data has a single class; need at least 2 groups")
    order = present[np.random.default_rng(seed).permutation(len(present))]
    n_train_groups = min(len(present) - 1, max(1, int(round(len(present) * float(train_fraction)))))
    train_mask = np.isin(group, order[:n_train_groups])
    train_idx, eval_idx = np.flatnonzero(train_mask), np.flatnonzero(~train_mask)
    if len(train_idx) < 2 or len(eval_idx) < 2:
        raise InputError("--protocol ood: a side of the split has fewer than 2 rows; use more groups")
    return train_idx, eval_idx, group, kind


# --------------------------------------------------------------------------------------------
# source shift

#: The training subspace a shift is measured in: the training set's top SHIFT_DIMS principal
#: directions (at most a quarter of D, so small models have room to move energy out of it).
SHIFT_DIMS = 128


@dataclass(frozen=True)
class Shift:
    """A rotation that turns some of the training set's principal directions fully into its
    lowest-variance directions, so that the evaluated photos vary where the training photos did
    not (planes orthogonal to the training mean, so the mean stays; unit norms and every inner
    product among the rotated vectors stay, so the float ground truth of kNN and text->image
    recall does not change)."""

    top: np.ndarray  # (D, r) training principal directions the share is measured in
    u: np.ndarray  # (D, r) orthonormal: the top directions, made orthogonal to the mean
    w: np.ndarray  # (D, r) orthonormal: the low-variance direction each u_i is turned into
    angles: np.ndarray  # (r,) radians per plane (u_i, w_i); pi/2 moves u_i's variation entirely

    def apply(self, X: np.ndarray) -> np.ndarray:
        a, b = X @ self.u, X @ self.w
        c, s = np.cos(self.angles), np.sin(self.angles)
        out = X + (a * (c - 1) - b * s) @ self.u.T + (a * s + b * (c - 1)) @ self.w.T
        return unit_rows(out)

    def share(self, X: np.ndarray) -> float:
        """Share of the spread of X (centred on its own mean) that lies in the training top-r directions."""
        C = X - X.mean(0)
        return float(((C @ self.top) ** 2).sum() / max((C * C).sum(), 1e-30))

    @property
    def moved(self) -> float:
        """How many principal directions were turned (a partly turned one counts by its angle)."""
        return float(self.angles.sum() / (np.pi / 2))


def _orthonormal(B: np.ndarray, against: np.ndarray) -> np.ndarray:
    B = B - against @ (against.T @ B)
    q, _ = np.linalg.qr(B)
    return q


def source_shift(X_train: np.ndarray, X_eval: np.ndarray, share: float, seed: int = 0) -> Shift:
    """The rotation (see :class:`Shift`) under which the evaluation set's own spread keeps
    ``share`` of its energy inside the training set's top principal directions (in
    distribution about 0.75 for CLIP photos; unfamiliar web photos measured 0.52).

    The training set's top directions are turned, in a seeded random order, each fully into a
    low-variance direction (the last one partly) until the share is reached: a new source varies
    along other directions, not along a smeared copy of the old ones. A share at or above the
    unshifted one turns nothing."""
    if not (0.0 < float(share) < 1.0):
        raise InputError(f"--shift {share}: the share of spread to keep in the training subspace must be in (0, 1)")
    X_train = np.asarray(X_train, np.float64)
    D = X_train.shape[1]
    r = min(SHIFT_DIMS, D // 4)
    if r < 1 or len(X_train) < 2:
        raise InputError("--protocol shift: needs embeddings of at least 4 dimensions and 2 training rows")
    mean = X_train.mean(0)
    C = X_train - mean
    evals, evecs = np.linalg.eigh(C.T @ C)
    evecs = evecs[:, np.argsort(-evals)]
    m = (mean / max(np.linalg.norm(mean), 1e-12))[:, None]
    u = _orthonormal(evecs[:, :r], m)
    w = _orthonormal(evecs[:, D - r :], np.hstack([m, u]))
    rng = np.random.default_rng(seed)
    g, _ = np.linalg.qr(rng.standard_normal((r, r)))
    w = w @ g  # each turned direction lands on a mix of low-variance ones
    order = rng.permutation(r)  # order[i]: when direction i turns
    top = evecs[:, :r]
    X_eval = np.asarray(X_eval, np.float64)

    def at(t: float) -> Shift:  # t directions turned
        return Shift(top, u, w, np.pi / 2 * np.clip(t - order, 0.0, 1.0))

    if at(0.0).share(X_eval) <= share:
        return at(0.0)
    lo, hi = 0.0, float(r)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if at(mid).share(at(mid).apply(X_eval)) > share else (lo, mid)
    return at(0.5 * (lo + hi))
