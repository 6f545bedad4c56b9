"""The benchmark harness: ``python -m bench`` (or ``vipcare bench``) reproduces every figure.

Scenarios run in child processes (so each has its own peak RSS) over databases
seeded reproducibly; ``docs/benchmarks.md`` is generated from the results.
"""
