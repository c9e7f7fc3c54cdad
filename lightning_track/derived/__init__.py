"""What is computed from ``metrics.jsonl`` and ``config.yaml``: ``summary.json``, ``metrics.csv``,
``report_draft.md``. Torch-free; rebuilt at any time by :func:`~lightning_track.derived.summary.post_process`."""
