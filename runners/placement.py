"""Where each task runs: images, resources, retries, GPUs and secrets on a cluster; locally, only
the code version kfp.local's cache key needs."""

from __future__ import annotations

from collections.abc import Callable

from leukemia_mtl.config import ConfigError, Profile

MINIO_ENV = ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY")
# KFP's own artifact store: its Secret holds the keys under other names and no endpoint, which is its Service's
KFP_MINIO_SECRET = "mlpipeline-minio-artifact"
KFP_MINIO_KEYS = {"accesskey": "MINIO_ACCESS_KEY", "secretkey": "MINIO_SECRET_KEY"}
KFP_MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
CODE_VERSION_ENV = "LEUKEMIA_MTL_CODE_VERSION"  # local runs: settings and code, in every task's cache key
Placement = Callable[..., object]  # place(task, kind, gpu=False, storage=False) -> task


def local_placement(code_version: str = "", images=None) -> Placement:
    """kfp.local ignores resources; a task's environment is part of its cache key, so the code version
    (the library's source is not part of the component's) goes there. `images` (runners.images.LocalImages,
    the docker runner): the image each task runs in here."""

    def place(task, kind: str, gpu: bool = False, storage: bool = False):
        if images is not None:
            task.set_container_image(images.gpu if gpu else images.cpu)
        return task.set_env_variable(CODE_VERSION_ENV, code_version) if code_version else task

    return place


def cluster_placement(settings: Profile) -> Placement:
    """A function that gives one task its image, resources, retries, GPUs and secrets."""
    from kfp import kubernetes

    cluster = settings.cluster
    node_label = None
    if cluster.gpu_node_label:
        key, sep, value = cluster.gpu_node_label.partition("=")
        if not (key and sep and value):
            raise ConfigError(f"cluster.gpu_node_label must be KEY=VALUE, got {cluster.gpu_node_label!r}")
        node_label = (key, value)
    tolerations = []
    for text in cluster.gpu_tolerations:
        spec, sep, effect = text.rpartition(":")
        key, has_value, value = spec.partition("=")
        if not (sep and key and effect in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
            raise ConfigError(
                f"cluster.gpu_tolerations: {text!r} must be KEY[=VALUE]:NoSchedule|PreferNoSchedule|NoExecute"
            )
        tolerations.append(
            dict(key=key, operator="Equal" if has_value else "Exists", value=value or None, effect=effect)
        )

    def place(task, kind: str, gpu: bool = False, storage: bool = False):
        resources = getattr(cluster, kind)
        task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
        task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)
        task.set_retry(num_retries=cluster.retries, backoff_duration=cluster.retry_backoff, backoff_factor=2.0)
        task.set_container_image(settings.image.gpu_image if gpu else settings.image.cpu_image)
        if gpu and settings.train.gpus > 0:
            task.set_accelerator_type(cluster.gpu_resource).set_accelerator_limit(settings.train.gpus)
            if node_label:
                kubernetes.add_node_selector(task, *node_label)
            for toleration in tolerations:
                kubernetes.add_toleration(task, **toleration)
        if storage:  # only the tasks that may read or write object storage outside KFP's own artifacts
            # optional: a run on synthetic data or local weights starts without the Secret; one that needs
            # storage stops at its first s3:// access, naming the missing variables (leukemia_mtl/data/storage.py)
            if cluster.minio_secret == KFP_MINIO_SECRET:
                kubernetes.use_secret_as_env(task, cluster.minio_secret, KFP_MINIO_KEYS, optional=True)
                task.set_env_variable("MINIO_ENDPOINT", KFP_MINIO_ENDPOINT)
            else:
                kubernetes.use_secret_as_env(
                    task, cluster.minio_secret, {name: name for name in MINIO_ENV}, optional=True
                )
        return task

    return place
