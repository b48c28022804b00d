"""Local emulators of the external services kseg talks to, for tests and benchmarks.

Import from the modules themselves (e.g. `tests.emulators.segment_api`), so that
`python -m tests.emulators.segment_api` does not import the module twice.
"""
