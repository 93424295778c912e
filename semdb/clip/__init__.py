"""CLIP: the model that turns photos and texts into unit vectors, in two runtimes.

    embedder.py   Embedder: open_clip (torch) by hub tag, local weights or local-dir:
    onnx/         the same towers exported to ONNX and run by onnxruntime (no torch)
    tokenizer.py  CLIP's tokenizer without torch (for the ONNX text tower)
    modelcache.py where weights digests and exports are cached

Nothing outside this package imports open_clip. Importing it loads neither torch nor open_clip:
the Embedder is imported from semdb.clip.embedder by the code that needs torch.
"""
