"""Helpers shared by the test suites and the benchmarks: envelopes (`envelopes`), envelopes
decoded as the pipeline decodes them (`frames`), a recording HTTP receiver (`receivers`) and
the `chaos-pause` test hook's config (`chaos`).

The benchmarks import them as `lily_dagster_tests.support.…`; they run from the repository
root as modules (`python -m benchmarks.propagation`), which puts the root on sys.path as
pytest's rootdir does for the tests. lily_dagster_tests is not in the lily_dagster wheel.
`envelopes` imports nothing from lily_dagster, so the contract suite may use it too."""
