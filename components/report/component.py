"""KFP wrapper of the report step: the HTML page, a Markdown summary and metrics for the Kubeflow UI."""

from typing import List

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output


def build_report_page(
    captions: Input[List[Dataset]],
    labels: Input[Dataset],
    storage_prefix: str,
    shards: str,
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    storage_root: str = "",
    run_id: str = "",
    compare_prefix: str = "",
):
    """Show what each layer sees: category shares per layer, entropy, distance to the final caption, an image browser.

    Args:
        captions: the caption step's manifests, one per shard (shards recorded as failed are listed at the top of the page, in the summary and as the failed_shards metric).
        labels: the categorize step's manifest.
        storage_prefix: where bulk data goes; the report's files land under <prefix>/report/.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        shards: the shard pattern (for thumbnails in the image browser).
        compare_prefix: empty (default), or a second finished run's storage prefix: the page also compares this run with it.
        report: the self-contained HTML report.
        summary: a short Markdown summary.
        metrics: headline numbers.
    """
    import json

    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.contracts import read_caption_pointers
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix
    from latent_verbalizer.components.report.single.report import build_report

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    caption_uris, failed = read_caption_pointers([artifact.path for artifact in captions])
    with open(labels.path) as f:
        pointer = json.load(f)
    result = build_report(caption_uris, pointer["labels"], pointer["aggregate"], storage.join(storage_prefix, "report"),
                          images_pattern=shards or None, compare_with=compare_prefix.strip() or None,
                          compare_role="report_compare_prefix", failed_shards=failed)
    with open(report.path, "w", encoding="utf-8") as f:
        f.write(result.html)
    with open(summary.path, "w", encoding="utf-8") as f:
        f.write(result.markdown)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)


def make_report_op(image: str):
    return dsl.component(build_report_page, base_image=image, install_kfp_package=False)
