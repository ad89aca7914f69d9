"""Where a folder dataset's decoded images are cached when no data.cache_dir is given.

A module of its own, importing nothing: training.config (torch) and training.data (numpy, PIL) cannot be imported
by export's command line, whose --help shows this default and must stay fast and torch-free.
"""

DEFAULT_CACHE_DIR = ".cache/datasets"
