"""The training-time writer: :class:`~lightning_track.run.logger.RunLogger` (the Lightning adapter), its
background writer thread, the sink host process, config, meta and rank handling.

Import the modules directly; this package imports nothing so that its torch-free parts (the sink host,
config, meta) start without Lightning."""
