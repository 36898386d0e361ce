#!/usr/bin/env bash
# Build the test cluster's binaries from their Go modules, once per machine: etcd, containerd (with its runc shim
# and ctr), and the Kubernetes node (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet).
# Each module here pins one release; a component is rebuilt only when its go.mod, go.sum or main changes, or
# the Go toolchain does. Usage: build.sh [BIN_DIR] (default: $OOM_KILLER_E2E_BIN or /var/cache/oom-killer-ci/bin)
# Each component ends with one line CI's log is read by: `ci: built <component> in <n>s` or `ci: <component> cached`.
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

build() {  # build NAME PACKAGES LDFLAGS [OUTPUT]: go build in the module folder NAME, when its inputs changed
  local name=$1 packages=$2 ldflags=$3 output=${4:-$bin/}
  local stamp="$bin/.$name.stamp" key
  key=$( (go version; cat "$here/$name"/go.mod "$here/$name"/go.sum "$here/$name"/*.go 2>/dev/null; echo "$ldflags $output") \
    | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    echo "ci: $name cached (in $bin)"
    return 0
  fi
  echo "build: $name (go build $packages)"
  local started=$SECONDS
  if declare -F "prepare_${name//-/_}" >/dev/null; then "prepare_${name//-/_}"; fi
  (cd "$here/$name" && go build -ldflags "$ldflags" -o "$output" $packages)
  echo "$key" >"$stamp"
  echo "ci: built $name in $((SECONDS - started))s"
}

build pause . "-s -w"
build etcd . "-s -w"
build containerd tool "-s -w"
build kubernetes tool "$(kubernetes_ldflags)"

# Pulumi: the CLI, the Python language host and the Kubernetes provider plugin, each from its own module.
module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
module_dir() { (cd "$here/$1" && go mod download -json "$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
pulumi_version_flag() { echo "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$1"; }

build pulumi tool "-s -w $(pulumi_version_flag "$(module_version pulumi github.com/pulumi/pulumi/pkg/v3)")"

build pulumi-language-python tool \
  "-s -w $(pulumi_version_flag "$(module_version pulumi-language-python github.com/pulumi/pulumi/sdk/v3)")"
# The host runs each program through this shim, found beside it; the one of the CLI's release matches the SDK.
sdk=$(module_dir pulumi "github.com/pulumi/pulumi/sdk/v3@$(module_version pulumi github.com/pulumi/pulumi/sdk/v3)")
install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"

kubernetes_provider=github.com/pulumi/pulumi-kubernetes/provider/v4
prepare_pulumi_kubernetes() {  # upstream's `go generate`: the schema and mapping the command embeds
  local source
  source="$(module_dir pulumi-kubernetes "$kubernetes_provider")/cmd/pulumi-resource-kubernetes"
  (
    cd "$here/pulumi-kubernetes"
    cp "$source/schema.json" "$source/terraform-mapping.json" .
    chmod u+w schema.json terraform-mapping.json
    VERSION="$(module_version pulumi-kubernetes "$kubernetes_provider")" go run "$source/generate.go"
    rm -f schema.json terraform-mapping.json
  )
}
build pulumi-kubernetes . \
  "-s -w -X $kubernetes_provider/pkg/version.Version=$(module_version pulumi-kubernetes "$kubernetes_provider")" \
  "$bin/pulumi-resource-kubernetes"
