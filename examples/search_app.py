"""A tiny photo-search service with semdb as its retrieval backend.

Index a folder, then answer one query per line from stdin with a JSON line of hits:

    python examples/search_app.py ./photos --store /tmp/app.semdb
    a red bicycle
    {"query": "a red bicycle", "hits": [{"path": "...", "score": 0.31}, ...]}

A line starting with "image:" searches by an image file instead of text.
"""

import argparse
import json
import sys

import semdb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default=None, help="open_clip model, e.g. local-dir:/models/clip")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    with semdb.open(args.store, model=args.model) as db:
        summary = db.ingest([args.folder])
        print(json.dumps({"indexed": summary["items"], "new": summary["new"]}), flush=True)
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                if line.startswith("image:"):
                    hits = db.search(image=line[len("image:") :].strip(), k=args.k)
                else:
                    hits = db.search(line, k=args.k)
                reply = {"query": line, "hits": [{"path": h.path, "score": round(h.score, 4)} for h in hits]}
            except semdb.SemdbError as err:  # a bad query answers with an error, the app goes on
                reply = {"query": line, "error": str(err)}
            print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
