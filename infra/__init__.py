"""oom-killer's Pulumi side: the stack's settings, the image, and the Kubernetes objects __main__.py declares."""
