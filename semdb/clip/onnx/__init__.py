"""CLIP's two towers as cached ONNX models run by onnxruntime: queries and ingest without torch.

On a CPU, the first time a tower is needed with torch loaded anyway (a cold text query, the
first ingest of a model), it is exported with ``torch.onnx.export``, checked against torch
(texts for the text tower; real decoded images for the image tower) and cached per weights
digest in ``semdb.clip.modelcache.cache_dir()/onnx/DIGEST/TOWER/``. From then on the model's digest
(``semdb.clip.modelcache``, no open_clip needed) finds the export and onnxruntime runs it: neither
torch nor open_clip is imported.

- ``export.py``: what both towers share: the cache layout, export + check + atomic publish,
  the tuned onnxruntime session, int8 dynamic quantisation.
- ``text.py``: the text tower (with ``semdb.clip.tokenizer``, CLIP's tokenizer without torch).
- ``image.py``: the image tower, with open_clip's eval preprocessing in Pillow + numpy.
- ``model.py``: both towers as one torch-free stand-in for ``semdb.clip.embedder.Embedder``.

``SEMDB_ONNX=0`` turns all of it off (neither used nor built). A CUDA device keeps torch.
Nothing here imports torch at import time, and nothing here ever imports open_clip.
"""

from .export import enabled

__all__ = ["enabled"]
