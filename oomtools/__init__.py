"""Tools that run beside the Pulumi program, never inside `pulumi up`, as one command: `oom-killer` (cli.py; the
arguments its subcommands share in arguments.py). `oom-killer demo` is the Docker rehearsal (demo.py, rehearsal.py),
`oom-killer verify` watches a deployed stack (the verify package, with alert_client.py for Prometheus and Alertmanager),
`oom-killer render` prints what the program declares under Pulumi's mocks (render.py). `make demo` and `make verify`
run the command."""
