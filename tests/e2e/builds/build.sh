#!/usr/bin/env bash
# Build the test cluster's binaries from their Go modules, once per machine: etcd, containerd (with its runc shim
# and ctr), and the Kubernetes node (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet).
# Each module here pins one release; a component is rebuilt only when its go.mod, go.sum or main changes, or
# the Go toolchain does. Usage: build.sh [BIN_DIR] (default: $OOM_KILLER_E2E_BIN or /var/cache/oom-killer-ci/bin)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${OOM_KILLER_E2E_BIN:-/var/cache/oom-killer-ci/bin}}"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly"

# The version a Kubernetes binary reports (kubectl version, the node's kubeletVersion) is set at link time, as
# upstream's own build does (hack/lib/version.sh); without it the binaries say v0.0.0-master.
kubernetes_ldflags() {
  local version major minor
  version=$(cd "$here/kubernetes" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  local flags="-s -w"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    flags+=" -X $package.gitTreeState=clean"
  done
  echo "$flags"
}

build() {  # build NAME PACKAGES LDFLAGS...: go build in the module folder NAME, when its inputs changed
  local name=$1 packages=$2 ldflags=$3
  local stamp="$bin/.$name.stamp" key
  key=$( (go version; cat "$here/$name"/go.mod "$here/$name"/go.sum "$here/$name"/*.go 2>/dev/null; echo "$ldflags") \
    | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    echo "build: $name cached in $bin"
    return 0
  fi
  echo "build: $name (go build $packages)"
  local started=$SECONDS
  (cd "$here/$name" && go build -ldflags "$ldflags" -o "$bin/" $packages)
  echo "$key" >"$stamp"
  echo "build: $name built in $((SECONDS - started))s"
}

build pause . "-s -w"
build etcd . "-s -w"
build containerd tool "-s -w"
build kubernetes tool "$(kubernetes_ldflags)"
