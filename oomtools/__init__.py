"""Tools that run beside the Pulumi program, never inside `pulumi up`: the mock renderer (render.py), the Docker
rehearsal and `make demo` (rehearsal.py, demo.py), and `make verify` (verify.py)."""
