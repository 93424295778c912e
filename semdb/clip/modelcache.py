"""What a cold query needs to know about a model without loading it (no torch, no open_clip).

- The **weights digest** (`model_id["digest"]`, see `semdb.clip.embedder.state_dict_digest`) of a weights
  file, cached so a query does not re-hash hundreds of MB each time. An entry is keyed by the
  file's real path, size, mtime and inode plus a fingerprint of the model config it was loaded
  with: a file that changes (or a config that changes) misses the cache and is hashed again.
- The **source** of a model named by hub tag or `hf-hub:` repo: which weights file and config
  fingerprint it resolved to last time, so the ONNX path (`semdb.clip.onnx`) can find the
  digest without asking open_clip (whose import pulls in torch). `local-dir:` needs no entry.

Both live in one small JSON file in the cache dir: $SEMDB_CACHE_DIR, else the user cache dir
(`~/.cache/semdb`). The cache is an optimisation only: unreadable or unwritable means a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

FORMAT = 1  # bump when the digest definition or what a key means changes
_INDEX = "models.json"

LOCAL_DIR = "local-dir:"
# open_clip's own choice of checkpoint in a model folder (factory._find_checkpoint_in_dir)
_PREFERRED = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)


def cache_dir() -> Path:
    env = os.environ.get("SEMDB_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir  # noqa: PLC0415 - only when no path is given

    return Path(user_cache_dir("semdb"))


def config_fingerprint(model_cfg: dict) -> str:
    return hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:16]


def file_key(path) -> list | None:
    """[real path, size, mtime_ns, inode] of a file, or None if it cannot be stat'ed."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return [real, st.st_size, st.st_mtime_ns, st.st_ino]


def pick_checkpoint(folder) -> Path | None:
    """The weights file open_clip loads from a `local-dir:` folder (same order as open_clip)."""
    folder = Path(folder)
    found = [p for pattern in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(pattern)]
    if not found:
        return None
    found.sort()
    found.sort(key=lambda p: p.suffix == ".safetensors", reverse=True)
    preferred = sorted((p for p in found if p.name in _PREFERRED), key=lambda p: _PREFERRED.index(p.name))
    return preferred[0] if preferred else found[0]


# --- the index file ---------------------------------------------------------------------


def _read() -> dict:
    try:
        data = json.loads((cache_dir() / _INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _update(section: str, key: str, value) -> None:
    """Set data[section][key] = value; atomic replace, last writer wins, errors ignored."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = _read() or {"format": FORMAT}
        entries = data.setdefault(section, {})
        if entries.get(key) == value:
            return  # nothing new: no write (a read-only cache dir stays quiet)
        entries[key] = value
        if len(entries) > 256:  # bounded: drop the oldest entries
            for old in list(entries)[: len(entries) - 256]:
                del entries[old]
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".models-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, folder / _INDEX)
    except OSError:
        pass


def _digest_key(weights, config_fp: str) -> str | None:
    key = file_key(weights)
    return None if key is None else json.dumps(key + [config_fp])


def cached_digest(weights, config_fp: str) -> str | None:
    """The digest recorded for this weights file (unchanged since) and config, or None."""
    key = _digest_key(weights, config_fp)
    return None if key is None else _read().get("digests", {}).get(key)


def store_digest(weights, config_fp: str, digest: str) -> None:
    key = _digest_key(weights, config_fp)
    if key is not None:
        _update("digests", key, digest)


def _source_key(name: str, pretrained: str | None) -> str:
    return json.dumps([name, pretrained, _open_clip_version()])


def _open_clip_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - kept lazy: loaded only on this path (a cold `import semdb` stays light)

    try:
        return version("open_clip_torch")
    except PackageNotFoundError:
        return "?"


def store_source(name: str, pretrained: str | None, weights, config_fp: str) -> None:
    if not name.startswith(LOCAL_DIR):
        _update("sources", _source_key(name, pretrained), [os.path.realpath(weights), config_fp])


def resolve_source(name: str, pretrained: str | None) -> tuple[Path, str] | None:
    """(weights file, config fingerprint) of a model without open_clip, or None if unknown."""
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR) :]).expanduser()
        try:
            cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        weights = pick_checkpoint(folder)
        return None if weights is None else (weights, config_fingerprint(cfg))
    entry = _read().get("sources", {}).get(_source_key(name, pretrained))
    if not entry or not os.path.isfile(entry[0]):
        return None
    return Path(entry[0]), entry[1]


def digest_of(name: str, pretrained: str | None) -> str | None:
    """The weights digest of a model from the cache alone (None: load it to know)."""
    source = resolve_source(name, pretrained)
    return None if source is None else cached_digest(*source)
