"""The model registry and the learning loop: signed immutable model versions, aliases, training from technician
labels, drift monitoring (see ``docs/models.md``)."""
