"""Batch scoring: ``python -m service score DIR [--out preds.csv|preds.jsonl] ...``.

Streams a folder of any size through a model: the walk is lazy (one
directory's names at a time), at most a few chunks are in flight, decoding
runs in worker processes while the main process runs ONNX Runtime, and each
chunk's rows are written as whole lines and flushed before the next, so an
interrupted run leaves a valid file that ``--resume`` continues.
With ``--url`` the images go to a running service instead of a local model.

One module per job: ``cli`` (the command line), ``run`` (one scoring job, start to summary),
``pipeline`` (chunks through the engine's streams, in order), ``walk`` (finding the images),
``decode`` (reading and decoding them, in worker processes), ``local`` (ONNX Runtime here, the decode
pool, shared memory, crash recovery), ``remote`` (a running service's /classify, with retries),
``sinks`` (CSV and JSON Lines, and reading them back to resume), ``accuracy`` (against folder names).
"""
