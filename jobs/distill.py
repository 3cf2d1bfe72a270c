"""Distillation as the two jobs the project already has: the teacher restores a seeded sample of
the archive (the restore job: Ray Data actors, manifest, resume), then the student is fine-tuned
on (input, teacher output) pairs (the fine-tuning job: Ray Train workers, checkpoints, resume),
and the held-out part of the sample measures how close it came and how much faster it is.

    restoration distill --teacher realesrgan-x4plus --student realesr-animevideov3 \\
        --images s3://bucket/scans/ --sample 50 --held-out 10 --storage s3://bucket/runs --name scans-x4

Everything goes to STORAGE/NAME/: ``sample/`` (the lists), ``teacher/`` (its outputs and
manifest), the student's checkpoints and ``model/``, ``distill.json`` (agreement and speed) and
``compare.html`` (the teacher's and the student's outputs side by side). Running the same command
again continues where it stopped, in whichever job it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DISTILL_DESCRIPTION", "add_arguments", "main", "run"]

DISTILL_DESCRIPTION = """\
Distill a heavy model (the teacher) into a fast one (the student) on your own images, with no clean
image: the teacher restores a seeded sample of the archive with the restore job, the student is
trained on (input, teacher output) pairs with the fine-tuning job, and the held-out part of the
sample reports the student's agreement with the teacher (PSNR / SSIM, bicubic's beside it) and the
speed ratio measured here. Outputs go to STORAGE/NAME/; the same command resumes.

students (--student SPEC): compact[:feat=64,conv=16] (Real-ESRGAN's SRVGG Compact), span[:feat=48],
esrgan[:feat=32,blocks=6], built fresh at the teacher's scale, or any --init of finetune (a model
name, a community file, a checkpoint) to start from. Default: realesr-animevideov3 (a trained
Compact) for x4 teachers, which reaches in minutes what a fresh network needs hours for.

example:
  restoration distill --teacher realesrgan-x4plus --student compact --images photos/ --sample 50 \\
      --held-out 10 --steps 1000 --storage runs --name photos-x4 --no-ray"""

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "distill.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from restoration.cli import add_licence_argument

    p.add_argument("--teacher", required=True, help="the heavy model: a name (restoration models), a community "
                                                    "file or a checkpoint folder")
    p.add_argument("--student", default=None,
                   help="a student spec (see above) or a model to start from (default: realesr-animevideov3, a "
                        "trained Compact, for x4 teachers; a fresh compact otherwise)")
    p.add_argument("--images", required=True, help="the archive: folder, s3:// prefix or list of image URIs")
    p.add_argument("--sample", type=int, default=50, help="images the teacher restores (default 50)")
    p.add_argument("--held-out", type=int, default=10, help="of those, held out to measure the student (default 10)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument("--steps", type=int, default=None, help="the student's optimizer steps (default: the config's)")
    p.add_argument("--storage", required=True, help="folder or s3:// prefix for the run")
    p.add_argument("--name", required=True, help="run name; re-running the same name resumes it")
    p.add_argument("--config", default=None,
                   help=f"YAML with the student's TrainConfig fields (default: jobs/configs/{DEFAULT_CONFIG.name})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set optim.lr=1e-4 (repeatable)")
    p.add_argument("--teacher-set", dest="teacher_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the teacher's restore job, e.g. predictor.tile=256 or pipeline.max_actors=4 "
                        "(repeatable; its outputs are always PNG)")
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers for the student (1)")
    p.add_argument("--use-gpu", action="store_true", help="GPUs for the teacher's actors and the student's workers")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs reserved per training worker (1)")
    p.add_argument("--max-failures", type=int, default=2, help="training worker failures retried (2)")
    p.add_argument("--speed-size", type=int, default=128,
                   help="side of the square input on which both models are timed for the report (128)")
    p.add_argument("--no-ray", action="store_true", help="both jobs in this process; Ray is not imported")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local instance)")
    add_licence_argument(p)


def _teacher_model(teacher: str) -> Any:
    from restoration.models.catalog import named_model_path
    from restoration.models.checkpoint import load_checkpoint

    return load_checkpoint(named_model_path(teacher) or teacher).model


def run(args: argparse.Namespace) -> int:
    """The distillation: sample, teacher job, student job, report; the exit code."""
    from restoration import config as config_lib
    from restoration import distill
    from restoration.cli import check_licence, check_worker_arguments
    from restoration.finetune.run import (
        LocalFinetuneExecutor,
        check_resumable,
        latest_checkpoint,
        plan_finetune,
        run_finetune,
    )
    from restoration.io import storage
    from restoration.models.checkpoint import model_licence
    from restoration.restore.planning import list_inputs
    from restoration.restore.run import LocalRestoreExecutor, RunStopped, run_restore
    from restoration.stopping import StopSignals

    check_worker_arguments(args, local=args.no_ray)
    if args.speed_size < 16:
        raise ValueError(f"--speed-size must be at least 16 pixels, got {args.speed_size}")
    traits = _teacher_model(args.teacher).traits
    task, scale = traits.task, traits.scale
    if task not in ("sr", "denoise", "jpeg", "deblur", "general"):
        raise ValueError(f"--teacher {args.teacher} does {task}; distillation takes a model that restores "
                         "whole images (no mask)")
    if task == "general" and scale > 1:
        task = "sr"
    if args.student is None:  # a trained Compact learns a x4 teacher's look far faster than a fresh one
        args.student = "realesr-animevideov3" if scale == 4 else "compact"
    check_licence([args.teacher], task, args, flag="--teacher")
    teacher_licence, _ = model_licence(args.teacher, task)

    root, uris, _ = list_inputs(storage.absolute_uri(args.images))
    sample = distill.draw_sample(uris, sample=args.sample, held_out=args.held_out, seed=args.seed)
    storage_uri = storage.absolute_uri(args.storage)
    run_uri = storage.join(storage_uri, args.name)
    all_list = distill.record_sample(run_uri, sample)
    teacher_output = storage.join(run_uri, distill.TEACHER_FOLDER)
    print(f"distill: {len(sample.train)} training and {len(sample.held_out)} held-out images of "
          f"{len(uris)} in {storage.redact(root)}; the teacher {args.teacher} ({task} x{scale}) restores them "
          f"into {storage.redact(teacher_output)}", flush=True)

    # 1. The teacher's restore job (lossless outputs: they are the student's targets).
    if not args.no_ray:
        import ray

        from jobs.ray_runtime import init_ray

        if not ray.is_initialized():
            init_ray(args.address)
        from jobs.restore import RayRestoreExecutor
        from jobs.settings import RayRestoreConfig as RestoreConfig

        restore_executor: Any = RayRestoreExecutor(args.address)
    else:
        from restoration.restore.settings import RestoreConfig

        restore_executor = LocalRestoreExecutor()
    gpu = (["predictor.device=cuda"] if args.no_ray else ["pipeline.use_gpu=true"]) if args.use_gpu else []
    restore_config = config_lib.load_config(RestoreConfig, overrides=[*gpu, *args.teacher_overrides,
                                                                      "output.format=png"])
    with StopSignals(restore_config.run.grace_seconds) as stop:
        try:
            summary = run_restore(all_list, teacher_output, task=task, model=args.teacher, config=restore_config,
                                  executor=restore_executor, stop=stop)
        except RunStopped as error:
            print(f"distill: {error}", file=sys.stderr)
            return error.exit_code
    if summary.stopped is not None:
        print(f"distill: the teacher's job stopped ({summary.stopped.signal}) with {summary.stopped.left} images "
              "left; run the same command again to continue", file=sys.stderr)
        return summary.stopped.exit_code
    pairs = distill.teacher_pairs(teacher_output, sample)
    if pairs.failed:
        print(f"distill: the teacher failed on {len(pairs.failed)} images, left out (see its manifest)", flush=True)

    # 2. The student's fine-tuning job on the pairs.
    overrides = [f"validation.limit={len(pairs.held_targets)}", *args.overrides]
    if scale > 1:
        overrides.insert(0, f"degradation.scale={scale}")
    plan = plan_finetune(task, train_images=teacher_output, val_images=teacher_output, storage_uri=storage_uri,
                         name=args.name, workers=args.workers, init=args.student,
                         config_path=args.config or str(DEFAULT_CONFIG), overrides=overrides, steps=args.steps,
                         pairs=pairs.as_lists())
    plan = dataclasses.replace(plan, init_licence=teacher_licence,
                               trained_on=f"pairs: the outputs of the teacher {args.teacher} (distillation)",
                               extra_provenance={"teacher": args.teacher, "teacher_licence": teacher_licence})
    check_resumable(plan, latest_checkpoint(plan))
    if args.no_ray:
        executor: Any = LocalFinetuneExecutor("cuda" if args.use_gpu else "cpu")
    else:
        from jobs.finetune import RayFinetuneExecutor

        executor = RayFinetuneExecutor(workers=args.workers, use_gpu=args.use_gpu,
                                       cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures,
                                       address=args.address)
    code = run_finetune(plan, executor)
    if code != 0:
        return code

    # 3. The report: agreement and speed on the held-out images, and the page to look at them.
    student = storage.join(run_uri, "model")
    report = distill.agreement_report(run_uri, teacher=args.teacher, student=student, pairs=pairs, task=task,
                                        speed_size=args.speed_size)
    print(distill.format_report(report), flush=True)
    page = _compare_page(run_uri, [args.teacher, student], task, len(sample.held_out))
    print(f"distill: report {storage.redact(storage.join(run_uri, distill.REPORT_FILE))}, page {page}", flush=True)
    return 0


def _compare_page(run_uri: str, models: list[str], task: str, held_out: int) -> str:
    """``<run>/compare.html``: the held-out images restored by the teacher and the student."""
    from restoration import distill
    from restoration.io import storage
    from restoration.pages.compare import write_comparison

    target = storage.join(run_uri, "compare.html")
    listing = storage.join(run_uri, distill.SAMPLE_FOLDER, "held-out.txt")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "compare.html"
        write_comparison(listing, models, str(html), task=task, sample=held_out, seed=0)
        storage.write_bytes(target, html.read_bytes())
    return storage.redact(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.distill", description=DISTILL_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from restoration.cli import run_command

    return run_command("distill", run, args)


if __name__ == "__main__":
    from jobs.distill import main as _main

    sys.exit(_main())
