"""A node on cgroup v2, measured by hand (issue 32): a real kubelet and containerd in Debian's own kernel, booted
under QEMU (TCG) from the VM tests' cached base, running the hog as a static pod until the kernel kills it.

It is a probe, not a test: nothing collects it, and neither `make test` nor `make e2e` runs it. It is kept here so
that `make e2e` can grow a cgroup v2 node from it. Run as root from the project's folder: `python -m
tests.e2e.v2node --runs 1 --seed host` (`--help` for the options). It reads the cluster's binaries where the e2e
harness builds them (harness/state.py's BIN) and the kernel and base root where the VM tests keep them
(tests/kernel_vm.py's CACHE); it makes both when absent, as they do. The kernel modules a node needs are cached
beside the base; everything else is made in a temporary folder, where each run's serial ports and summary stay.

- `payload.py`: the initrd (the base, then the node's binaries, modules, images and guest/).
- `oci.py`: image archives without Docker.
- `vm.py`: one boot, its marks stamped with host seconds, QEMU's RSS.
- `table.py`: the stage table and the breakdown from the agents' logs.
- `guest/`: the guest's /init, its watcher, and the node's containerd, kubelet, CNI and static pod files.
"""
