// The pod sandbox's pause process, for an image made here: no registry is reachable for registry.k8s.io/pause.
module oom-killer.test/pause

go 1.26.0
