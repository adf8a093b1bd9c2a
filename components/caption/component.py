"""KFP wrapper of the caption step."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output


def caption_shard(
    features: Input[Artifact],
    storage_prefix: str,
    layers: str,
    precision: str,
    batch_size: str,
    seq_len: int,
    min_seq_len: int,
    pretrained: str,
    captions: Output[Dataset],
    storage_root: str = "",
    run_id: str = "",
    fail_on_bad_shard: bool = False,
    grounding: bool = False,
):
    """Decode a caption for every (image, layer) of one extracted shard.

    Args:
        features: the extract step's manifest of this shard.
        storage_prefix: where bulk data goes; captions land under <prefix>/captions/<shard>/captions.parquet.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        layers: 'all' (every extracted layer) or 0-based block indices.
        precision: float32 (the study's exact method, token for token) or bfloat16 (faster, opt-in; near-ties can resolve differently).
        batch_size: (image, layer) pairs decoded together, or 'auto'.
        seq_len: most tokens per caption including the start token (study: 30).
        min_seq_len: end-of-text banned while shorter than this (study: 5).
        pretrained: the features' weights at another location (local/PVC path, s3://); empty: as extracted.
        fail_on_bad_shard: False (default): a shard extract recorded as failed is passed on as failed (no model is loaded), and features that fail their checks (checksum mismatch) record the shard as failed; True: such a shard fails this step.
        grounding: False (default): captions only; True: also each caption's grounding map (where in the image it looks: one weight per image patch, summing to 1; gradient x input after the first normalisation of the decoder's input), as the captions table's 'grounding' column with the patch grid in its metadata. Costs a backward pass per decode batch.
        captions: small JSON manifest pointing at the captions Parquet, or {"failed": reason, "shard": ..., "step": ...}.
    """
    import json

    from latent_verbalizer.components.caption.caption import CAPTIONS_NAME, CaptionSettings, run_caption
    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.contracts import FailedShard
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.shard_failures import is_bad_shard
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    with open(features.path) as f:
        pointer = json.load(f)
    failed = FailedShard.from_pointer(pointer)
    if failed is not None and fail_on_bad_shard:
        raise RuntimeError(f"{failed.shard} failed at {failed.step}: {failed.reason}")
    if failed is None:
        out = storage.join(storage_prefix, "captions")
        settings = CaptionSettings(layers=layers, precision=precision, batch_size=batch_size, seq_len=int(seq_len),
                                   min_seq_len=int(min_seq_len), pretrained=pretrained or None,
                                   run_id=run_id, grounding=bool(grounding))
        try:
            (manifest,) = run_caption(pointer["features"], out, settings)
        except Exception as e:
            if fail_on_bad_shard or not is_bad_shard(e):
                raise  # of the moment (network, out of memory): Kubeflow's retry runs the step again
            failed = FailedShard(shard=pointer["shard"], reason=str(e), step="caption")
    if failed is not None:  # passed on for the report to list; categorize leaves it out
        result = failed.to_pointer()
    else:
        shard_dir = storage.join(out, storage.basename(pointer["features"]))
        result = {"captions": storage.join(shard_dir, CAPTIONS_NAME), "rows": manifest["rows"],
                  "images": manifest["images"], "layers": manifest["layers"], "skipped": manifest["skipped"],
                  "shard": pointer["shard"]}
    with open(captions.path, "w") as f:
        json.dump(result, f)
    captions.metadata.update({k: v for k, v in result.items() if k != "skipped"})


def make_caption_op(image: str):
    return dsl.component(caption_shard, base_image=image, install_kfp_package=False)
