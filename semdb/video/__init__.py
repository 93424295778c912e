"""Videos in the collection: which files are videos (files.py, no PyAV), how their frames are
sampled and decoded with PyAV (frames.py), one frame read back at its time (extract.py), and
how a time in a video is written (timecode.py). Ingest's video stage is semdb/ingest/videos.py.
"""
