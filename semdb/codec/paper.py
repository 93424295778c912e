"""The PQ-VAE with a shared codebook, as the paper describes it: a benchmark baseline.

Reference: "Compression Beyond Pixels", IEEE MLSP 2025. Its decoder is a nonlinear conv net,
so its codes are searched by decoding them first (decode-then-cosine); semdb's own codec
(``additive.py``) searches the codes themselves and is compared against this one at equal bits.

::

    x (D, unit) --(x - mean) * scale--> Linear(D, hidden) -> GELU -> Dropout -> Linear(hidden, feat*g*g)
      --reshape (feat, g, g)--> GELU -> Conv3x3(feat, feat) -> GELU -> Conv3x3(feat, channels) = z
    z (channels, g, g) --M = g*g*channels/e_dim sub-vectors, position-major, each L2-normalised-->
      --cosine-nearest of ONE shared codebook (n_e unit codewords; straight-through)--> indices (n, M)
    z_q --> Conv3x3(channels, feat) -> GELU -> Conv3x3(feat, feat) -> GELU -> flatten
      -> Linear(feat*g*g, hidden) -> GELU -> Dropout -> Linear(hidden, D) = y
      --> x_hat = L2-normalise(mean + y / scale)

``mean`` and ``scale`` (the training mean and 1 / RMS residual norm; zero and one with
``center=False``) standardise the input and output: a fixed layer, not a change to the design.
Loss (the paper's): 10 * (1 - cos(x, x_hat)) + ||sg(z) - e||^2 + 0.25 * ||z - sg(e)||^2.
Training: AdamW; the codebook seeded by spherical k-means on the first batch's sub-vectors;
codewords unused for an epoch re-seeded; early stopping on a seeded validation split (the best
weights kept). Deterministic for a seed (forked RNG, deterministic algorithms, one thread).
Bits per item = M * log2(n_e), fixed-length. How the defaults were chosen: docs/notes/FIGURES.md.

Args (``train_paper``; the keys of ``DEFAULTS``):
    bits: the code length; ``paper_shape`` picks (grid, channels, e_dim, n_e) for it, or give
        all four.
    hidden: MLP width on both sides.  feat: channels of the feature map between MLP and convs.
    dropout: on the hidden MLP layers.  noise: encoder-input noise (a denoising regulariser).
    center: standardise around the training mean.  lr, weight_decay, batch_size, max_epochs,
    patience, val_fraction, kmeans_iters, plateau: the optimiser and its stopping.
    beta, cos_weight: the commitment and cosine weights of the loss.

Stored as ``PaperCodec.to_parts() -> (config, tensors)`` (a JSON-able dict; name -> float32
array) and read back by ``PaperCodec.from_parts``. ``PaperQuantizer`` is this network as a
``Codec`` variant (semdb.codec.quantizer's interface).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np

from ..errors import CodecError
from ..progress import report
from .quantizer import TrainRequest

# Latent-shape search space of paper_shape, in order of preference (see its docstring).
GRIDS = (5, 4)
N_ES = (4, 16, 2, 256)
CHANNELS = (128, 64, 256, 96, 192, 160, 32)
E_DIMS = tuple(range(4, 33))

PREFIX = "paper."
VERSION = 1
# Config keys that define the network (everything needed to rebuild it).
ARCH_KEYS = ("dim", "grid", "channels", "e_dim", "n_e", "hidden", "feat", "dropout")
# Deterministic training facts kept in the config (train_seconds is not: it would change the
# codec's identity from run to run).
TRAIN_KEYS = ("seed", "epochs", "best_epoch", "val_cos")

DEFAULTS = dict(
    hidden=256,  # MLP width on both sides
    feat=16,  # channels of the small feature map between MLP and conv stack
    dropout=0.3,  # on the hidden MLP layer of encoder and decoder
    lr=1e-3,  # AdamW; a larger rate collapses the codes to the mean
    weight_decay=1e-2,
    batch_size=64,
    max_epochs=300,
    patience=30,  # epochs without a better validation cosine before stopping
    val_fraction=0.1,
    kmeans_iters=20,
    beta=0.25,  # commitment weight (paper)
    cos_weight=10.0,  # weight of 1 - cos(x, x_hat) (paper)
    noise=0.15,  # encoder-input noise (denoising regulariser): x + noise * N(0, I/D), renormalised
    center=True,  # standardise the encoder input / decoder output around the training mean
    plateau=0,  # halve the learning rate after this many epochs without improvement (0: off)
)


def paper_shape(bits: int, dim: int) -> dict | None:
    """Latent shape (grid, channels, e_dim, n_e) with grid*grid*channels/e_dim*log2(n_e) == bits.

    Deterministic preference order, first fit wins:
      1. grid 5 (the paper's 5x5), then grid 4 (16 positions, for budgets that 25 positions
         cannot express, e.g. 64, 128, 256, 512);
      2. n_e 4 (the paper's), then 16, 2, 256;
      3. channels 128 (the paper's), then 64, 256, 96, 192, 160, 32;
      4. e_dim (4..32, dividing channels) as close to 16 as possible in log scale; a tie goes
         to the larger e_dim.
    The paper default 400 bits gives (5, 128, 16, 4). Returns None when no shape fits (e.g. 3).
    ``dim`` (the embedding dimension) does not constrain the shape; it is returned with it.
    """
    bits = int(bits)
    if bits <= 0:
        return None
    for grid in GRIDS:
        pos = grid * grid
        if bits % pos:
            continue
        per_pos = bits // pos
        for n_e in N_ES:
            b = int(math.log2(n_e))
            if per_pos % b:
                continue
            slots = per_pos // b  # sub-vectors per position
            for channels in CHANNELS:
                if channels % slots:
                    continue
                e_dim = channels // slots
                if e_dim in E_DIMS:
                    return dict(
                        grid=grid, channels=channels, e_dim=e_dim, n_e=n_e, dim=int(dim), m=pos * slots, bits=bits
                    )
    return None


def _build(cfg: dict):
    """The torch module for an architecture config (imports torch lazily)."""
    import torch  # noqa: PLC0415 - torch loads only when a paper codec is used
    import torch.nn.functional as F  # noqa: PLC0415 - torch loads only when a paper codec is used
    from torch import nn  # noqa: PLC0415 - torch loads only when a paper codec is used

    class PaperNet(nn.Module):
        def __init__(self, dim, grid, channels, e_dim, n_e, hidden, feat, dropout):
            super().__init__()
            self.grid, self.channels, self.e_dim, self.n_e, self.feat = grid, channels, e_dim, n_e, feat
            self.m = grid * grid * channels // e_dim
            self.enc_mlp = nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, feat * grid * grid)
            )
            self.enc_conv = nn.Sequential(
                nn.GELU(), nn.Conv2d(feat, feat, 3, padding=1), nn.GELU(), nn.Conv2d(feat, channels, 3, padding=1)
            )
            self.codebook = nn.Parameter(F.normalize(torch.randn(n_e, e_dim), dim=1))
            self.dec_conv = nn.Sequential(
                nn.Conv2d(channels, feat, 3, padding=1), nn.GELU(), nn.Conv2d(feat, feat, 3, padding=1), nn.GELU()
            )
            self.dec_mlp = nn.Sequential(
                nn.Linear(feat * grid * grid, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
            )
            # Fixed input standardisation (set from the training data when training with
            # center=True; identity otherwise): the encoder sees (x - mean) * scale, the decoder
            # outputs normalize(mean + mlp(h) / scale).
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("scale", torch.ones(1))

        def subvectors(self, x):
            """(n, D) -> (n, M, e_dim) L2-normalised sub-vectors, position-major."""
            h = self.enc_mlp((x - self.mean) * self.scale).view(-1, self.feat, self.grid, self.grid)
            z = self.enc_conv(h)  # (n, C, g, g)
            z = z.permute(0, 2, 3, 1).reshape(x.shape[0], self.m, self.e_dim)
            return F.normalize(z, dim=-1)

        def codewords(self):
            return F.normalize(self.codebook, dim=1)

        def quantise(self, zn):
            """Cosine-nearest shared codeword for every sub-vector: (n, M) indices."""
            return (zn @ self.codewords().T).argmax(dim=-1)

        def decode_q(self, zq):
            """(n, M, e_dim) quantised sub-vectors -> (n, D) unit rows."""
            n = zq.shape[0]
            h = zq.reshape(n, self.grid, self.grid, self.channels).permute(0, 3, 1, 2)
            h = self.dec_conv(h).reshape(n, -1)
            return F.normalize(self.mean + self.dec_mlp(h) / self.scale, dim=-1)

        def decode_indices(self, idx):
            return self.decode_q(self.codewords()[idx])

        def forward(self, x):
            zn = self.subvectors(x)
            cb = self.codewords()
            idx = (zn @ cb.T).argmax(dim=-1)
            zq = cb[idx]
            codebook_loss = F.mse_loss(zq, zn.detach())
            commit_loss = F.mse_loss(zn, zq.detach())
            zst = zn + (zq - zn).detach()  # straight-through
            return self.decode_q(zst), idx, zn, codebook_loss, commit_loss

    return PaperNet(**{k: cfg[k] for k in ARCH_KEYS})


def _spherical_kmeans(points, k: int, iters: int, gen):
    """k-means++ seeding + spherical Lloyd on unit rows (torch, seeded generator)."""
    import torch  # noqa: PLC0415 - torch loads only when a paper codec is used
    import torch.nn.functional as F  # noqa: PLC0415 - torch loads only when a paper codec is used

    n = points.shape[0]
    centers = [points[torch.randint(n, (1,), generator=gen)].squeeze(0)]
    d2 = None
    for _ in range(1, k):
        dist = (2 - 2 * points @ centers[-1]).clamp_min(0)
        d2 = dist if d2 is None else torch.minimum(d2, dist)
        if float(d2.sum()) <= 0:
            j = torch.randint(n, (1,), generator=gen)
        else:
            j = torch.multinomial(d2 / d2.sum(), 1, generator=gen)
        centers.append(points[j].squeeze(0))
    C = torch.stack(centers)
    for _ in range(iters):
        assign = (points @ C.T).argmax(dim=1)
        sums = torch.zeros_like(C).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if bool(empty.any()):  # re-seed empty clusters to random points
            sums[empty] = points[torch.randint(n, (int(empty.sum()),), generator=gen)]
        C = F.normalize(sums, dim=1)
    return C


def train_paper(X: np.ndarray, bits: int, seed: int = 0, progress=None, **overrides) -> dict:
    """Train the paper's PQ-VAE on unit rows X (n, D) at a bit budget.

    ``overrides`` may set any key of ``DEFAULTS`` (hidden, feat, dropout, lr, weight_decay,
    batch_size, max_epochs, patience, ...) and the shape (grid, channels, e_dim, n_e) directly.
    ``progress(stage, epoch, max_epochs)`` (the semdb.progress protocol) is called after every epoch.

    Returns a flat dict: every state-dict tensor as a float32 numpy array under "paper.<name>",
    plus the config scalars (dim, grid, channels, e_dim, n_e, hidden, feat, dropout, seed,
    epochs, best_epoch, val_cos) and train_seconds. Pass it to ``PaperCodec(params)``.
    """
    import torch  # noqa: PLC0415 - torch loads only when a paper codec is used
    import torch.nn.functional as F  # noqa: PLC0415 - torch loads only when a paper codec is used

    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"need a (n >= 2, D) array of embeddings, got shape {X.shape}")
    n, dim = X.shape
    hp = dict(DEFAULTS)
    shape_keys = ("grid", "channels", "e_dim", "n_e")
    unknown = set(overrides) - set(hp) - set(shape_keys)
    if unknown:
        raise ValueError(f"unknown train_paper options: {sorted(unknown)}")
    if all(k in overrides for k in shape_keys):
        shape = {k: int(overrides[k]) for k in shape_keys}
        got = shape["grid"] ** 2 * shape["channels"] // shape["e_dim"] * int(math.log2(shape["n_e"]))
        if shape["channels"] % shape["e_dim"] or 2 ** int(math.log2(shape["n_e"])) != shape["n_e"] or got != bits:
            raise ValueError(f"shape {shape} does not give {bits} bits")
    else:
        shape = paper_shape(bits, dim)
        if shape is None:
            raise ValueError(f"no paper latent shape gives exactly {bits} bits; try 400 or 256")
    hp.update({k: v for k, v in overrides.items() if k not in shape_keys})
    cfg = dict(
        dim=int(dim),
        grid=shape["grid"],
        channels=shape["channels"],
        e_dim=shape["e_dim"],
        n_e=shape["n_e"],
        hidden=int(hp["hidden"]),
        feat=int(hp["feat"]),
        dropout=float(hp["dropout"]),
    )

    t0 = time.perf_counter()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net, best, info = _fit(torch, F, cfg, hp, torch.from_numpy(X), gen, progress)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
    out = {PREFIX + k: v.detach().cpu().numpy().astype(np.float32) for k, v in best.items()}
    out.update(cfg)
    out.update(seed=int(seed), **info)
    out["train_seconds"] = time.perf_counter() - t0
    return out


def _fit(torch, F, cfg, hp, X, gen, progress):
    n = X.shape[0]
    perm = torch.randperm(n, generator=gen)
    n_val = max(1, int(round(n * hp["val_fraction"]))) if n >= 10 else 0
    Xva, Xtr = (X[perm[:n_val]], X[perm[n_val:]]) if n_val else (X[:0], X)
    ntr = Xtr.shape[0]
    net = _build(cfg)
    if hp["center"]:
        with torch.no_grad():
            mean = Xtr.mean(0)
            net.mean.copy_(mean)
            net.scale.fill_(float(1.0 / ((Xtr - mean).pow(2).sum(1).mean().sqrt() + 1e-12)))
    opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    bs = min(int(hp["batch_size"]), ntr)
    n_e = cfg["n_e"]

    def val_cos():
        net.eval()
        with torch.no_grad():
            Xe = Xva if n_val else Xtr
            xh = net.decode_indices(net.quantise(net.subvectors(Xe)))
            cos = float((xh * Xe).sum(1).mean())
        net.train()
        return cos

    initialised = False
    best_cos, best_state, best_epoch, bad = -2.0, copy.deepcopy(net.state_dict()), 0, 0
    epoch = 0
    for epoch in range(1, int(hp["max_epochs"]) + 1):
        net.train()
        order = torch.randperm(ntr, generator=gen)
        usage = torch.zeros(n_e, dtype=torch.long)
        last_zn = None
        for s in range(0, ntr, bs):
            xb = Xtr[order[s : s + bs]]
            if not initialised:
                with torch.no_grad():
                    zn = net.subvectors(xb).reshape(-1, cfg["e_dim"])
                    net.codebook.data.copy_(_spherical_kmeans(zn, n_e, int(hp["kmeans_iters"]), gen))
                initialised = True
            xin = xb
            if hp["noise"]:
                xin = F.normalize(
                    xb + hp["noise"] / math.sqrt(xb.shape[1]) * torch.randn(xb.shape, generator=gen), dim=1
                )
            xh, idx, zn, cb_loss, commit = net(xin)
            rec = (1 - (xh * xb).sum(1)).mean()
            loss = hp["cos_weight"] * rec + cb_loss + hp["beta"] * commit
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            usage += torch.bincount(idx.reshape(-1), minlength=n_e)
            last_zn = zn.detach().reshape(-1, cfg["e_dim"])
        dead = (usage == 0).nonzero().flatten()
        if len(dead):  # dead-codeword restarts
            pick = torch.randint(last_zn.shape[0], (len(dead),), generator=gen)
            with torch.no_grad():
                net.codebook.data[dead] = last_zn[pick]
            st = opt.state.get(net.codebook, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in st:
                    st[key][dead] = 0
        cos = val_cos()
        report(progress, "training paper codec", epoch, int(hp["max_epochs"]))
        if cos > best_cos + 1e-5:
            best_cos, best_state, best_epoch, bad = cos, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= int(hp["patience"]):
                break
            if hp["plateau"] and bad % int(hp["plateau"]) == 0:
                for group in opt.param_groups:
                    group["lr"] *= 0.5
    return net, best_state, dict(epochs=int(epoch), best_epoch=int(best_epoch), val_cos=float(best_cos))


class PaperCodec:
    """Encode/decode with a trained paper PQ-VAE (CPU, torch.inference_mode, batched).

    ``PaperCodec(params)`` takes ``train_paper``'s flat dict; ``from_parts(config, tensors)``
    and ``to_parts()`` round-trip it through a JSON-able config and float32 numpy tensors.
    Codes are (n, M) int64 indices into the shared codebook, slot order position-major; the
    fixed-length size is ``bits = M * log2(n_e)``. Scoring is decode-then-cosine.
    """

    def __init__(self, params: dict):
        tensors = {k[len(PREFIX) :]: np.asarray(v, dtype=np.float32) for k, v in params.items() if k.startswith(PREFIX)}
        config = {k: v for k, v in params.items() if not k.startswith(PREFIX)}
        self._init(config, tensors)

    @classmethod
    def from_parts(cls, config: dict, tensors: dict) -> PaperCodec:
        self = cls.__new__(cls)
        tensors = {
            (k[len(PREFIX) :] if k.startswith(PREFIX) else k): np.asarray(v, dtype=np.float32)
            for k, v in tensors.items()
        }
        self._init(dict(config), tensors)
        return self

    def _init(self, config: dict, tensors: dict):
        import torch  # noqa: PLC0415 - torch loads only when a paper codec is used

        missing = [k for k in ARCH_KEYS if k not in config]
        if missing:
            raise ValueError(f"paper codec config lacks {missing}")
        if config.get("version", VERSION) > VERSION:
            raise ValueError(f"paper codec version {config['version']} is newer than this semdb ({VERSION})")
        self.config = {k: _scalar(config[k]) for k in ARCH_KEYS}
        self.config.update({k: _scalar(config[k]) for k in TRAIN_KEYS if k in config})
        self.config["arch"] = "paper"
        self.config["version"] = VERSION
        self.info = {"train_seconds": float(config["train_seconds"])} if "train_seconds" in config else {}
        self.net = _build(self.config)
        tensors = dict(tensors)
        # Codecs written before the standardisation buffers existed: identity standardisation.
        tensors.setdefault("mean", np.zeros(self.config["dim"], dtype=np.float32))
        tensors.setdefault("scale", np.ones(1, dtype=np.float32))
        self.net.load_state_dict(
            {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()}, strict=True
        )
        self.net.eval()

    dim = property(lambda self: self.config["dim"])
    m = property(lambda self: self.net.m)
    k = property(lambda self: self.config["n_e"])
    bits = property(lambda self: self.net.m * int(math.log2(self.config["n_e"])))

    def to_parts(self) -> tuple[dict, dict]:
        """(config: JSON-able dict, tensors: name -> float32 numpy array)."""
        tensors = {
            PREFIX + k: v.detach().cpu().numpy().astype(np.float32).copy() for k, v in self.net.state_dict().items()
        }
        return dict(self.config), tensors

    def encode(self, X: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(n, D) embeddings -> (n, M) int64 codeword indices."""
        import torch  # noqa: PLC0415 - torch loads only when a paper codec is used

        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) embeddings, got shape {X.shape}")
        out = np.empty((len(X), self.m), dtype=np.int64)
        with torch.inference_mode():
            for s in range(0, len(X), batch_size):
                xb = torch.from_numpy(np.ascontiguousarray(X[s : s + batch_size]))
                out[s : s + batch_size] = self.net.quantise(self.net.subvectors(xb)).numpy()
        return out

    def decode(self, indices: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """(n, M) indices -> (n, D) float32 unit rows."""
        import torch  # noqa: PLC0415 - torch loads only when a paper codec is used

        idx = np.asarray(indices)
        if idx.ndim != 2 or idx.shape[1] != self.m:
            raise ValueError(f"expected (n, {self.m}) indices, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.k):
            raise ValueError(f"indices must be in [0, {self.k})")
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(idx), batch_size):
                ib = torch.from_numpy(np.ascontiguousarray(idx[s : s + batch_size], dtype=np.int64))
                out[s : s + batch_size] = self.net.decode_indices(ib).numpy()
        return out


def _scalar(v):
    """numpy/python scalar -> plain JSON-able python scalar."""
    if isinstance(v, np.ndarray):
        v = v.item()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


class PaperQuantizer:
    """The PQ-VAE as a `Codec` stage (see `quantizer.Quantizer`): no additive tables, so codes
    are scored by decoding them first.

        x ──PaperCodec.encode──> indices ──PaperCodec.decode──> x_hat (unit) ──> q . x_hat

    The codec's config holds the network's under "paper", its tensors the weights under PREFIX.
    """

    name = "paper"
    adc = False
    n_coarse = 0
    layout = None

    def __init__(self, config: dict, tensors: dict[str, np.ndarray]):
        self.net = PaperCodec.from_parts(config["paper"], {k: v for k, v in tensors.items() if k.startswith(PREFIX)})

    def encode_indices(self, X: np.ndarray) -> np.ndarray:
        return self.net.encode(X)

    def decode_indices(self, idx: np.ndarray) -> np.ndarray:
        return self.net.decode(idx).astype(np.float32)

    def decode_unit(self, idx: np.ndarray) -> np.ndarray:
        return self.decode_indices(idx)

    @property
    def tables(self) -> np.ndarray:
        raise CodecError("the paper architecture has no additive tables; it scores by decoding")

    @property
    def decoder(self) -> np.ndarray:
        raise CodecError("the paper architecture has no linear decoder; it decodes with its network")

    def norms(self, idx: np.ndarray) -> np.ndarray:
        raise CodecError("the paper architecture's reconstructions are unit-norm; it scores by decoding")

    def slot_coords(self, idx: np.ndarray) -> np.ndarray:
        raise CodecError("the paper architecture has no slot coordinates; it decodes with its network")

    def check_consistent(self) -> None:
        """The weights were checked against the network when it was built (load_state_dict, strict)."""

    @staticmethod
    def train(request: TrainRequest) -> tuple[dict, dict]:
        net = PaperCodec(train_paper(request.X, request.bits, seed=request.seed, progress=request.progress))
        pconf, tensors = net.to_parts()
        return tensors, dict(arch="paper", paper=pconf, d=int(pconf["e_dim"]), m=net.m, k=net.k)
