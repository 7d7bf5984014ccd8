"""`make bench`: ceilings, a naive baseline, the floor loop and the worker, measured on the same servers.

`python -m tests.benchmarks --help` lists the options; the report goes to docs/benchmarks.md
with a chart (docs/benchmarks.png), and the worker's flame graph (py-spy) to docs/flamegraphs/.
"""
