"""Launching training commands: ``lt-run`` (:mod:`.runner`) and the decisions it takes."""
