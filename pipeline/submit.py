"""``lverb submit``: the CI path. Upload the compiled pipeline (once; then a version per
distinct YAML, named by its content hash), get or create the experiment, start a run,
optionally wait for it. A version is reused only when it was made from the same YAML.

The token comes from ``KFP_TOKEN`` or, in a cluster, the pod's service-account token
(what ``kfp.Client`` reads by itself) -- never from an argument, never printed.
"""

import datetime as dt
import hashlib
import logging
import os
from typing import Optional

from ..components.common.version import __version__
from .pipeline import PIPELINE_NAME

log = logging.getLogger(__name__)

TOKEN_ENV = "KFP_TOKEN"


CONTENT_MARK = "content sha256:"  # in a version's description: the YAML it was made from


def package_digest(package: str) -> str:
    """sha256 of the compiled YAML's bytes: what a pipeline version is named and checked by."""
    with open(package, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def default_version_name(digest: str) -> str:
    """Package version + the YAML's content hash: another YAML (another image registry, another
    commit, the same wheel) is another version; the same YAML is the same version."""
    return f"{__version__}-{digest[:12]}"


def make_client(host: str, namespace: Optional[str]):
    import kfp

    token = os.environ.get(TOKEN_ENV) or None
    kwargs = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)


def ensure_pipeline_version(client, package: str, version: str, digest: str) -> tuple[str, str]:
    """(pipeline id, version id): the pipeline is uploaded once, then a version per name.

    An existing version of that name is reused only when its description records the same
    content hash (``digest``); one made from other content is refused, never run in place of
    this YAML."""
    pipeline_id = client.get_pipeline_id(PIPELINE_NAME)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=PIPELINE_NAME,
                                          description="What each layer of a CoCa vision encoder sees, in words.")
        pipeline_id = pipeline.pipeline_id
        log.info("uploaded pipeline %s (%s)", PIPELINE_NAME, pipeline_id)
    versions = client.list_pipeline_versions(pipeline_id, page_size=100,
                                             filter=_name_filter(version)).pipeline_versions or []
    for v in versions:
        if v.display_name != version:
            continue
        if f"{CONTENT_MARK}{digest}" not in (v.description or ""):
            raise ValueError(f"pipeline version {version!r} exists ({v.pipeline_version_id}) but was not made from "
                             f"{package} (sha256 {digest[:12]}): give another --version, or leave --version out to "
                             "name the version by the YAML's content hash")
        log.info("pipeline version %s exists with the same content (%s)", version, v.pipeline_version_id)
        return pipeline_id, v.pipeline_version_id
    created = client.upload_pipeline_version(package, pipeline_version_name=version, pipeline_id=pipeline_id,
                                             description=f"{CONTENT_MARK}{digest}")
    log.info("uploaded pipeline version %s (%s)", version, created.pipeline_version_id)
    return pipeline_id, created.pipeline_version_id


def _name_filter(name: str) -> str:
    import json

    return json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})


def ensure_experiment(client, name: str, namespace: Optional[str]) -> str:
    try:
        return client.get_experiment(experiment_name=name, namespace=namespace).experiment_id
    except ValueError:
        return client.create_experiment(name, namespace=namespace).experiment_id


def submit(host: str, package: str = "latent_verbalizer.yaml", namespace: Optional[str] = None,
           experiment: Optional[str] = None, version: Optional[str] = None, params: Optional[dict] = None,
           wait: bool = False, timeout: int = 24 * 3600) -> dict:
    """Start a run of the compiled pipeline; returns run id, URL and (with ``wait``) its final state."""
    if not os.path.exists(package):
        from latent_verbalizer.pipeline.compile import compile_pipeline

        compile_pipeline(package)
    for key, value in (params or {}).items():
        if any(s in key.lower() for s in ("secret", "token", "password", "access_key")):
            raise ValueError(f"--params {key}: secrets never go in pipeline parameters; use Kubernetes secrets "
                             "(manifests/README.md)")
    from kfp import components

    from .params import match_parameter_types

    params = match_parameter_types(params or {}, components.load_component_from_file(package))
    client = make_client(host, namespace)
    digest = package_digest(package)
    version = version or default_version_name(digest)
    pipeline_id, version_id = ensure_pipeline_version(client, package, version, digest)
    experiment_id = ensure_experiment(client, experiment or PIPELINE_NAME, namespace)
    job_name = f"{PIPELINE_NAME} {version} {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
    run = client.run_pipeline(experiment_id, job_name, params=params or {}, pipeline_id=pipeline_id,
                              version_id=version_id)
    result = {"run_id": run.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
              "pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": experiment_id}
    if wait:
        done = client.wait_for_run_completion(run.run_id, timeout=timeout)
        result["state"] = str(done.state)
    return result
