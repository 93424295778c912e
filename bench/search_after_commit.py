"""What a search costs right after a commit, in process: the first text, `like` and filtered
search after each commit of a batch, and the same searches warm (no commit in between).

    python bench/search_after_commit.py [--items 100000] [--batch 256] [--rounds 5]

The store is serve_load.py's (generated photos, codec trained on them, synthetic items up to
--items, the tiny random-init model). One read-only Database searches while a second one, in
the same process, adds --batch items per round, as `semdb serve --watch` does. Prints the
median milliseconds per kind as JSON (the last line).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ingest_speed import resolve_model_arg  # noqa: E402
from serve_load import build_store  # noqa: E402

SEARCHES = {
    "text": {"k": 24},
    "like": {"k": 24},
    "filtered": {"k": 24, "under": "/bench/d05"},
}


def main(argv=None) -> int:
    import semdb

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="semdb_after_commit_"))
    try:
        model, desc = resolve_model_arg("tiny", tmp)
        store, _ = build_store(tmp, model, 240, args.items)
        ms: dict[str, list[float]] = {}
        with semdb.open(store, readonly=True, model=model) as db:
            ids, codes = db.store.load_codes()
            rows = db.codec.decode(np.asarray(codes[: args.batch]))
            rng = np.random.default_rng(0)

            def timed(label, kind):
                options = dict(SEARCHES[kind])
                if kind == "like":
                    options["like"] = int(ids[rng.integers(len(ids))])
                text = None if kind == "like" else "a photo of a cat"
                t = time.perf_counter()
                db.search(text, **options)
                ms.setdefault(f"{kind} {label}", []).append(1000 * (time.perf_counter() - t))

            for kind in SEARCHES:  # load the model, build the index and what filters read
                timed("first", kind)
            for r in range(args.rounds):
                for kind in SEARCHES:
                    with semdb.open(store) as writer:
                        writer.add_embeddings([f"/new/r{r}{kind}/{i}.jpg" for i in range(args.batch)], rows)
                    timed("after a commit", kind)
                    timed("warm", kind)
        out = {"model": desc, "items": args.items, "batch": args.batch, "rounds": args.rounds}
        out["median_ms"] = {k: round(statistics.median(v), 1) for k, v in ms.items()}
        print(json.dumps(out), flush=True)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
