"""Closed-loop actions: commands to machines (and, built on them, policies, approvals and the decision record)."""
