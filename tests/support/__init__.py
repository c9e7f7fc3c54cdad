"""Helpers the tests share: readers of each format (``readers``), Trainer and process set-up
(``trainers``, ``processes``), and one module per area (``cluster``, ``health``, ``migrate``, ``sync``).

Importable as ``support.*``: pyproject's ``[tool.pytest.ini_options] pythonpath`` puts ``tests/`` on
the path, and :func:`support.processes.script_env` does the same for the scripts tests start. The toy
model and its data live in the library, ``lightning_track.training.toy`` (benchmarks use it too).
"""
