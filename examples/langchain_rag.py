"""A multimodal retriever over a photo folder with LangChain: a text question -> the photos that
answer it, with their metadata, ready to hand to a language model as context.

    pip install 'semdb[langchain]'
    python examples/langchain_rag.py ./photos "a dog on the beach" --store /tmp/rag.semdb

The photos are added as LangChain documents (their path as page_content, file name, folder and
date as metadata), embedded by the store's own CLIP image tower; the question is embedded by its
text tower, so words find pictures. A photo's document id is its path: a re-run embeds only the
photos it has not stored yet. Everything after `retriever` is plain LangChain: put it in any chain.
"""

import argparse
import datetime
import os
import sys

from semdb.images import is_image_path, read_header
from semdb.langchain import SemdbVectorStore


def photo_metadata(path: str) -> dict:
    header = read_header(path)
    taken = header.taken if header and header.taken is not None else os.path.getmtime(path)
    return {
        "file": os.path.basename(path),
        "folder": os.path.dirname(path),
        "taken": datetime.datetime.fromtimestamp(taken).date().isoformat(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("question")
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default=None, help="open_clip model, e.g. local-dir:/models/clip")
    parser.add_argument("-k", type=int, default=3)
    args = parser.parse_args()

    store = SemdbVectorStore(args.store, model=args.model)
    try:
        photos = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(os.path.abspath(args.folder))
            for name in names
            if is_image_path(name)
        )
        stored = {doc.id for doc in store.get_by_ids(photos)}
        photos = [p for p in photos if p not in stored]
        for start in range(0, len(photos), 64):  # one transaction per 64 photos
            chunk = photos[start : start + 64]
            store.add_images(chunk, [photo_metadata(p) for p in chunk], ids=chunk)

        retriever = store.as_retriever(search_kwargs={"k": args.k})
        docs = retriever.invoke(args.question)
        for doc in docs:
            print(f"{doc.page_content}  {doc.metadata}")
        # what a RAG chain would hand to its language model:
        context = "\n".join(f"- {d.metadata['file']} (taken {d.metadata['taken']})" for d in docs)
        print(f"\nPhotos that answer {args.question!r}:\n{context}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
