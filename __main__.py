"""oom-killer: a memory hog in a namespace of its own, OOM-killed on purpose by its container's memory limit.

Read top to bottom: settings, image, namespace, limit range, network policy, the pod template and its workload
(a Deployment, or a DaemonSet with scope=node), the alerts (optional), exports.
"""

import pulumi
import pulumi_kubernetes as k8s

from infra.cancellation import exit_quietly_when_interrupted
from infra.image import REGISTRY_LOGIN_NAME, pull_credentials, workload_image
from infra.kube import (
    MEMORY_DIR,
    MEMORY_VOLUME,
    RUN_AS,
    TERMINATION_MESSAGE_PATH,
    container_resources,
    kubectl_commands,
    labels,
    limit_range_items,
    memory_empty_dir,
    namespace_labels,
    node_selector,
    pod_resources,
    predicted_oom_kill_step,
    predicted_seconds_to_oom_kill,
    vpa_spec,
    workload_env,
    workload_env_from_pod,
)
from infra.monitoring import PROMETHEUS_RULE_API_VERSION, PROMETHEUS_RULE_NAME, rule_groups
from infra.names import CONTAINER, VPA, VPA_API_VERSION, WORKLOAD
from infra.settings import load_settings

exit_quietly_when_interrupted()  # a failed or cancelled update ends with the engine's one line, no traceback of ours

# Settings: every key validated before anything is declared; a bad one stops here with one message.
settings = load_settings()
stack = pulumi.get_stack()
app_labels = labels(stack)
# Requests equal to limits (Guaranteed QoS; memoryRequestMb below the limit: Burstable), on the container or with
# limitScope=pod on the pod. memoryKind=pagecache writes to an emptyDir on the node's disk: its size is the container's
# ephemeral-storage too.
resources = container_resources(settings)
pod_level = pod_resources(settings)
empty_dir = memory_empty_dir(settings)  # memoryKind=tmpfs or pagecache: the emptyDir the hog writes into

# Image: built from ./Dockerfile and pushed, built and kept local, or a prebuilt one.
image = workload_image(settings)

# Namespace: its own, so the damage and the cleanup stay inside it; Pod Security "restricted" enforced.
# After the build: an image that cannot be built or pushed (a wrong registry password) leaves the cluster as it was.
after_build = [image.build] if image.build else []
namespace = (
    k8s.core.v1.Namespace(
        "namespace",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=settings.namespace, labels=namespace_labels(stack)),
        opts=pulumi.ResourceOptions(depends_on=after_build or None),
    )
    if settings.create_namespace
    # createNamespace=false: a cluster admin made it (infra/rights.yaml, the same labels); the stack neither creates
    # nor deletes it, so its deployer needs no right on any cluster-scoped object.
    else None
)
namespace_name = namespace.metadata.name if namespace else pulumi.Output.from_input(settings.namespace)
# What goes into the namespace waits for it, or (an admin's namespace) for the build directly.
inside = pulumi.ResourceOptions(depends_on=[namespace] if namespace else after_build or None)

# LimitRange: no container (limitScope=pod: no pod) in the namespace may outgrow the configured limit, and a
# container without a limit gets it. It acts only when a pod is admitted, so the workload waits for it.
limit_range = k8s.core.v1.LimitRange(
    "limit-range",
    metadata=k8s.meta.v1.ObjectMetaArgs(name="oom-killer-memory", namespace=namespace_name, labels=app_labels),
    spec=k8s.core.v1.LimitRangeSpecArgs(
        limits=[
            k8s.core.v1.LimitRangeItemArgs(
                type=item["type"],
                default=item.get("default"),
                default_request=item.get("defaultRequest"),
                max=item["max"],
            )
            for item in limit_range_items(settings)
        ]
    ),
    opts=inside,
)

# NetworkPolicy: deny all traffic in and out; the workload needs no network.
network_policy = k8s.networking.v1.NetworkPolicy(
    "deny-all",
    metadata=k8s.meta.v1.ObjectMetaArgs(name="oom-killer-deny-all", namespace=namespace_name, labels=app_labels),
    spec=k8s.networking.v1.NetworkPolicySpecArgs(
        pod_selector=k8s.meta.v1.LabelSelectorArgs(), policy_types=["Ingress", "Egress"]
    ),
    opts=inside,
)

# Registry credentials in the config (registryUsername, registryPassword): the nodes pull the pushed image with them,
# from a Secret of type dockerconfigjson the pod names; the password stays encrypted in the stack's state.
credentials = pull_credentials(settings)
pull_secret = (
    k8s.core.v1.Secret(
        "registry-credentials",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=REGISTRY_LOGIN_NAME, namespace=namespace_name, labels=app_labels),
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": credentials},
        opts=inside,
    )
    if credentials is not None
    else None
)

# The pod: one container whose request equals its limit, or with limitScope=pod a pod whose request equals its
# limit (Guaranteed QoS: the memory is reserved on the node, so the OOM stays inside this pod; memoryRequestMb reserves
# less, Burstable), locked down to Pod Security "restricted". Deployment and DaemonSet run this same template.
pod_template = k8s.core.v1.PodTemplateSpecArgs(
    metadata=k8s.meta.v1.ObjectMetaArgs(labels=app_labels),
    spec=k8s.core.v1.PodSpecArgs(
        # nodeSelector and tolerations aim the hog at a node pool (and a stopped DaemonSet at no node).
        node_selector=node_selector(settings),
        tolerations=[
            k8s.core.v1.TolerationArgs(key=t.key, operator=t.operator, value=t.value, effect=t.effect or None)
            for t in settings.tolerations
        ]
        or None,
        resources=k8s.core.v1.ResourceRequirementsArgs(requests=pod_level["requests"], limits=pod_level["limits"])
        if pod_level
        else None,
        automount_service_account_token=False,
        image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name=REGISTRY_LOGIN_NAME)] if pull_secret else None,
        enable_service_links=False,
        termination_grace_period_seconds=5,
        security_context=k8s.core.v1.PodSecurityContextArgs(
            run_as_non_root=True,
            run_as_user=RUN_AS,
            run_as_group=RUN_AS,
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        ),
        containers=[
            k8s.core.v1.ContainerArgs(
                name=CONTAINER,
                image=image.reference,
                image_pull_policy=image.pull_policy,
                env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in workload_env(settings).items()]
                + [
                    k8s.core.v1.EnvVarArgs(
                        name=k,
                        value_from=k8s.core.v1.EnvVarSourceArgs(
                            resource_field_ref=k8s.core.v1.ResourceFieldSelectorArgs(container_name=CONTAINER, **ref)
                        ),
                    )
                    for k, ref in workload_env_from_pod(settings).items()
                ],
                resources=k8s.core.v1.ResourceRequirementsArgs(
                    requests=resources["requests"], limits=resources["limits"]
                )
                if resources
                else None,
                security_context=k8s.core.v1.SecurityContextArgs(
                    allow_privilege_escalation=False,
                    privileged=False,
                    read_only_root_filesystem=True,
                    run_as_non_root=True,
                    run_as_user=RUN_AS,
                    run_as_group=RUN_AS,
                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                    seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                ),
                # The hog writes its latest step here: `kubectl describe pod` shows it beside OOMKilled.
                termination_message_path=TERMINATION_MESSAGE_PATH,
                termination_message_policy="FallbackToLogsOnError",
                volume_mounts=[k8s.core.v1.VolumeMountArgs(name=MEMORY_VOLUME, mount_path=MEMORY_DIR)]
                if empty_dir
                else None,
            )
        ],
        volumes=[
            k8s.core.v1.VolumeArgs(
                name=MEMORY_VOLUME,
                empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
                    medium=empty_dir["medium"] or None, size_limit=empty_dir["sizeLimit"]
                ),
            )
        ]
        if empty_dir
        else None,
    ),
)

workload_metadata = k8s.meta.v1.ObjectMetaArgs(
    name=WORKLOAD,
    namespace=namespace_name,
    labels=app_labels,
    # A pod built to crash never becomes available: without this `pulumi up` would wait 10 minutes and fail.
    annotations={"pulumi.com/skipAwait": "true"},
)
workload_options = pulumi.ResourceOptions(
    depends_on=[limit_range, network_policy, *([pull_secret] if pull_secret else [])]
)
selector = k8s.meta.v1.LabelSelectorArgs(match_labels=app_labels)
workload: k8s.apps.v1.Deployment | k8s.apps.v1.DaemonSet
if settings.scope == "node":
    # DaemonSet (scope=node): one hog on every node the pod may go to (nodeSelector, tolerations), replaced one
    # node at a time. replicas=0 keeps it with a nodeSelector no node carries.
    workload = k8s.apps.v1.DaemonSet(
        "daemon-set",
        metadata=workload_metadata,
        spec=k8s.apps.v1.DaemonSetSpecArgs(
            selector=selector,
            update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(
                type="RollingUpdate", rolling_update=k8s.apps.v1.RollingUpdateDaemonSetArgs(max_unavailable=1)
            ),
            template=pod_template,
        ),
        opts=workload_options,
    )
else:
    # Deployment: `replicas` hogs wherever the scheduler puts them.
    workload = k8s.apps.v1.Deployment(
        "deployment",
        metadata=workload_metadata,
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=settings.replicas,
            selector=selector,
            # Old pods go before new ones start: never more than `replicas` limits' worth of memory reserved.
            strategy=k8s.apps.v1.DeploymentStrategyArgs(type="Recreate"),
            template=pod_template,
        ),
        opts=workload_options,
    )

# PrometheusRule (prometheusRule=true): the alerts of alerts/oom-killer.rules.yaml, as they are, for a Prometheus
# Operator whose ruleSelector matches prometheusRuleLabels. The rules watch every namespace, not only this one.
if settings.prometheus_rule:
    k8s.apiextensions.CustomResource(
        "prometheus-rule",
        api_version=PROMETHEUS_RULE_API_VERSION,
        kind="PrometheusRule",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=PROMETHEUS_RULE_NAME,
            namespace=namespace_name,
            labels={**app_labels, **dict(settings.prometheus_rule_labels)},
        ),
        spec={"groups": rule_groups()},
        opts=inside,
    )

# VerticalPodAutoscaler (vpa): VPA's answer to the hog's OOM kills, over the workload, up to vpaMaxMb (the
# LimitRange's max too). Needs VPA's CRD (and VPA running) in the cluster.
if settings.vpa != "none":
    k8s.apiextensions.CustomResource(
        "vertical-pod-autoscaler",
        api_version=VPA_API_VERSION,
        kind="VerticalPodAutoscaler",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=VPA, namespace=namespace_name, labels=app_labels),
        spec=vpa_spec(settings, "DaemonSet" if settings.scope == "node" else "Deployment"),
        opts=pulumi.ResourceOptions.merge(inside, pulumi.ResourceOptions(depends_on=[workload])),
    )

# Exports: where it runs, what it runs, when the first kill is due, and how to watch it.
pulumi.export("namespace", namespace_name)
pulumi.export("workloadKind", "DaemonSet" if settings.scope == "node" else "Deployment")
pulumi.export("workloadName", workload.metadata.name)
if settings.scope == "deployment":
    pulumi.export("deploymentName", workload.metadata.name)  # the name of stacks before scope=node (workloadName)
pulumi.export("image", image.reference)
pulumi.export("memoryLimit", settings.memory_limit)
pulumi.export("predictedSecondsToOomKill", predicted_seconds_to_oom_kill(settings))
pulumi.export("predictedOomKillStep", predicted_oom_kill_step(settings))
pulumi.export("kubectl", namespace_name.apply(lambda name: kubectl_commands(name, stack)))
