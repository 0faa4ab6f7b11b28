"""Benchmarks of this project beside the tools users would otherwise pick; see
:mod:`bench.run` (``python -m bench``)."""
