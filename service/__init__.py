"""The serving side, torch-free: the BentoML HTTP service (``service.py``) and the batch scorer (``score/``).

``python -m service serve`` and ``python -m service score``; see docs/architecture.md for the modules.
"""
