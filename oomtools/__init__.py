"""Tools that run beside the Pulumi program, never inside `pulumi up`: `make verify` (verify.py)."""
