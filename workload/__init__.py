"""oom-killer's workload: grows its resident memory in steps until the kernel OOM-kills it."""
