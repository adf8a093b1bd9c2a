"""KFP wrappers of the extract step. Bodies import the real code (the image has the package);
they only map parameters and artifacts. Docstrings become the Kubeflow UI's help."""

from kfp import dsl
from kfp.dsl import Artifact, Output


def extract_shard(
    shard: str,
    storage_prefix: str,
    model: str,
    pretrained: str,
    layers: str,
    dtype: str,
    batch_size: str,
    features: Output[Artifact],
    storage_root: str = "",
    run_id: str = "",
    fail_on_bad_shard: bool = False,
):
    """Extract every selected vision block's output tokens of one webdataset shard.

    Args:
        shard: URI of one shard (s3://, minio:// or a path on a mounted volume).
        storage_prefix: where bulk data goes; features land under <prefix>/features/<shard>/.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix, and the run named in
            the lease of each shard folder it writes (another run writing the same shard at once is refused).
        model: open_clip CoCa architecture (coca_ViT-L-14, tiny-random-coca offline), or a Hugging Face captioner (BLIP, VisionEncoderDecoder, LLaVA) as hf:ORG/NAME[@REVISION] (read at the commit preflight pinned for the run), a local/PVC folder or an s3:// prefix.
        pretrained: CoCa: pretrained tag, local/PVC checkpoint, s3:// object; Hugging Face: a folder or s3:// prefix holding the model; or 'random'. Empty: the study's weights (CoCa), the model itself (Hugging Face).
        layers: 'all' or 0-based block indices, e.g. 0,5,23.
        dtype: stored feature dtype: float16, bfloat16 or float32 (fp16, bf16, fp32 accepted).
        batch_size: images per batch, or 'auto' (from free GPU memory).
        fail_on_bad_shard: False (default): a shard bad for a reason a retry cannot change (not a tar, no images, features of other parameters) gives a pointer that records it failed, and the run goes on without it; True: it fails this step.
        features: small JSON manifest pointing at the features (the bulk data stays in storage), or {"failed": reason, "shard": ..., "step": "extract"}.
    """
    import json

    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.contracts import FailedShard, shard_name
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.model_families import is_hf_model
    from latent_verbalizer.components.common.model_families.hub_revision import pin_names, read_resolved_models
    from latent_verbalizer.components.common.shard_failures import is_bad_shard
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix
    from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    out = storage.join(storage_prefix, "features")
    # a hub model at the commit preflight pinned for the whole run (every shard the same commit)
    pretrained = pretrained or None
    if is_hf_model(model):
        model, pretrained = pin_names(model, pretrained, read_resolved_models(storage_prefix))
    settings = ExtractSettings(model=model, pretrained=pretrained, layers=layers, dtype=dtype, batch_size=batch_size,
                              run_id=run_id)
    result = run_extract([shard], out, settings)
    if shard in result.failed:
        error = result.errors[shard]
        if fail_on_bad_shard or not is_bad_shard(error):
            raise error  # of the moment (network...): Kubeflow's retry runs the step again
        pointer = FailedShard(shard=shard, reason=result.failed[shard], step="extract").to_pointer()
    else:
        manifest = result.manifests[shard]
        pointer = {"features": storage.join(out, shard_name(shard)), "shard": shard, "images": manifest.image_count,
                   "skipped": len(manifest.skipped), "layers": manifest.layers, "model": manifest.model}
    with open(features.path, "w") as f:
        json.dump(pointer, f)
    features.metadata.update(pointer)


def make_extract_op(image: str):
    return dsl.component(extract_shard, base_image=image, install_kfp_package=False)
