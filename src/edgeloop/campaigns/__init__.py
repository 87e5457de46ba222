"""Staged rollouts with quality gates: shadow, canary waves, promotion or automatic rollback (see
``docs/models.md``). The engine is payload-agnostic: model versions now, software releases later."""
