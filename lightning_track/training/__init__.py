"""Lightning-facing helpers: build a run from YAML (:mod:`.configure`), LightningCLI integration,
precision and data-loading choices for the hardware at hand, and the demo model."""
