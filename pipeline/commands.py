"""``lverb compile``, ``lverb run``, ``lverb submit``: the pipeline's own commands."""

import argparse

from .params import parse_params

PARAMS_HELP = ("pipeline parameters as JSON or key=value,key=value; a value may hold commas "
               "(e.g. extract_model=coca_ViT-L-14,extract_layers=0,5,23); repeat --params to add more")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compile", help="write the pipeline YAML to upload in the Kubeflow UI")
    c.add_argument("--output", default="latent_verbalizer.yaml", help="file to write (default latent_verbalizer.yaml)")
    c.add_argument("--image-registry", default=None, help="registry of the component image (default: the project's)")
    c.add_argument("--image-tag", default=None, help="tag of the component image (default: the package version)")
    c.add_argument("--parallelism", type=int, default=4, help="shards processed at once (GPU pairs in flight)")
    c.set_defaults(func=_compile)

    r = sub.add_parser("run", help="run the whole pipeline (--local: on this machine with kfp.local)")
    r.add_argument("--local", action="store_true", required=True, help="run with kfp.local (the only mode of this command)")
    r.add_argument("--params", action="append", default=None, help=PARAMS_HELP)
    r.add_argument("--storage", default=None, help="bulk data prefix: a folder or s3://bucket/prefix (default: under --workdir)")
    r.add_argument("--workdir", default=None, help="folder for this run (default runs/<timestamp>)")
    r.add_argument("--parallelism", type=int, default=2)
    r.add_argument("--no-cache", action="store_true", help="re-run every step even when kfp.local has it cached")
    r.add_argument("--compare-with", default=None, metavar="MODEL",
                   help="then run again on the same images with this model (e.g. tiny-random-blip), and make the second "
                        "run's report compare the two")
    r.set_defaults(func=_run)

    s = sub.add_parser("submit", help="upload the pipeline to Kubeflow and start a run (CI); token from KFP_TOKEN")
    s.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline")
    s.add_argument("--namespace", default=None, help="Kubeflow profile namespace")
    s.add_argument("--experiment", default=None, help="Kubeflow experiment (default: the pipeline's name)")
    s.add_argument("--version", default=None, help="pipeline version name (default: package version + the YAML's content hash); "
                                                     "an existing version is reused only for the same YAML")
    s.add_argument("--package", default="latent_verbalizer.yaml", help="compiled pipeline YAML (default: compile it now)")
    s.add_argument("--params", action="append", default=None, help=PARAMS_HELP)
    s.add_argument("--wait", action="store_true", help="wait for the run; exit non-zero when it fails")
    s.add_argument("--timeout", type=int, default=24 * 3600, help="seconds to wait with --wait")
    s.set_defaults(func=_submit)


def _compile(args) -> int:
    from latent_verbalizer.pipeline.compile import compile_pipeline

    path = compile_pipeline(args.output, registry=args.image_registry, tag=args.image_tag, parallelism=args.parallelism)
    print(f"wrote {path}")
    return 0


def _run(args) -> int:
    from latent_verbalizer.pipeline.local import run_local, run_local_compared

    options = dict(workdir=args.workdir, storage_prefix=args.storage, parallelism=args.parallelism,
                   cache=not args.no_cache, verbose=args.verbose)
    if args.compare_with:
        result = run_local_compared(parse_params(args.params), args.compare_with, **options)
        print(f"\nfirst run's report: {result['first']['report']}")
    else:
        result = run_local(parse_params(args.params), **options)
    for line in random_weights_lines(result):
        print(line)
    report = result["report"]
    opener = "(on S3: copy it out to open it)" if report.startswith("s3://") else \
        f"open it: python -m webbrowser file://{report}"
    print(f"\nreport: {report}\n{opener}\nbulk data: {result['storage_prefix']}\n"
          f"KFP artifacts: {result['pipeline_root']}\nfull logs: {result['log']}")
    return 0


def random_weights_lines(result: dict) -> list[str]:
    """A RANDOM WEIGHTS line for each run of a ``run_local`` result (and its ``first``) whose
    model is random weights (the demo's defaults are)."""
    from latent_verbalizer.components.common.random_weights import random_weights_warning

    runs = [result.get("first"), result]
    found = (random_weights_warning(r["params"].get("extract_model"), r["params"].get("extract_pretrained"))
             for r in runs if r)
    return list(dict.fromkeys(w for w in found if w))


def _submit(args) -> int:
    from latent_verbalizer.pipeline.submit import submit

    run = submit(host=args.host, package=args.package, namespace=args.namespace, experiment=args.experiment,
                 version=args.version, params=parse_params(args.params), wait=args.wait, timeout=args.timeout)
    print(f"run {run['run_id']}: {run['url']}")
    if args.wait:
        print(f"state: {run['state']}")
        return 0 if run["state"] == "SUCCEEDED" else 1
    return 0
