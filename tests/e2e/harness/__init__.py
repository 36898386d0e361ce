"""The test cluster's parts, as kind splits its own (`pkg/cluster/internal/create`): the processes it runs and the
state file that lets another process stop them (`state`), what it changes on the machine (`host`), the control
plane as a list of steps sharing one context (`control_plane`), and nodes made from one recipe (`nodes`). The
cluster itself, the façade the tests use, is `tests/e2e/cluster.py`."""
