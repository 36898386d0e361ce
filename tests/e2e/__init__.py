"""The end-to-end layer (make e2e): a real single-node cluster built from the upstream release modules."""
