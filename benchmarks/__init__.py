"""Benchmarks for compat_asgi: ratios measured in one run.

Run ``python -m benchmarks`` (``--quick`` for a few-second smoke run,
``--only NAME`` for one benchmark, ``--profile`` to profile the middleware
server under HTTP load). See ``benchmarks/RESULTS.md`` for a recorded run.
"""
