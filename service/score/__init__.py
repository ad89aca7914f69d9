"""Batch scoring: ``python -m service score DIR [--out preds.csv|preds.jsonl] ...``.

Streams a folder of any size through a model: the walk is lazy (one
directory's names at a time), at most a few chunks are in flight, decoding
runs in worker processes while the main process runs ONNX Runtime, and each
chunk's rows are written as whole lines and flushed before the next, so an
interrupted run leaves a valid file that ``--resume`` continues.
With ``--url`` the images go to a running service instead of a local model.

One module per job: ``cli`` (the command line), ``arguments`` (what is refused before an engine opens),
``run`` (one scoring job, start to exit status), ``loop`` (the run loop, the same for every engine),
``output`` (rows written whole, a stopped write leaving a file that matches the summary), ``resume``
(what --resume trusts in the rows already written), ``summary`` (the summary a job ends with),
``engines`` (the table of engines), ``pipeline`` (chunks through the engine's streams, in order),
``walk`` (finding the images), ``decode`` (reading and decoding them, in worker processes), ``local``
(ONNX Runtime here, the decode pool, shared memory, crash recovery), ``remote`` and its ``remote_*``
modules (a running service's /classify: requests with retries, those in flight, its answers, the
--url and --api-key checks), ``ray_engine`` and its ``ray_*`` modules (Ray Data), ``sinks`` (CSV and
JSON Lines, and reading them back to resume), ``accuracy`` (against folder names).
"""
