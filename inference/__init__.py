"""The model contract, shared by training, export and serving; torch-free.

- ``manifest``: the schema of ``models/manifest.json`` and of the model card every ONNX file carries.
- ``precisions``: the precisions a model can be exported at, and what each promises.
- ``fits``: how an image of another aspect ratio is fitted to the model's input (crop, squash, pad).
- ``preprocess``: image bytes -> the pixels and the float32 tensor every model takes.
  ``image_formats``, ``image_limits`` and ``pixel_modes`` are its parts: which files are images, the limits and
  errors of a decode, any Pillow mode to 8-bit RGB.
- ``runtime``: ONNX Runtime sessions and the exported classifier.
- ``errors``: ``UsageError``, the refusal of what the user gave: one line and status 2 on the command lines.
- ``tree_files``: which files under a folder of images are its images (training's reader and the scorer's walk).

It imports none of ``training``, ``export`` or ``service`` (tests/test_architecture.py checks it), so
each of them can depend on it and the serving side stays free of torch.
"""
