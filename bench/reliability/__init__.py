"""Adept's reliability suite: load, faults, fuzzing and tenant isolation, measured.

``python -m bench.reliability`` (``make reliability``) runs every scenario and prints one
table; ``tests/reliability`` runs the fast ones under pytest. Each scenario is a function
returning a :class:`bench.reliability.report.Outcome`.
"""
