"""``restoration finetune`` and ``restoration restore``: the Ray jobs as subcommands.

Ray is imported only when a job runs, so ``restoration --help`` stays fast; ``restoration restore
--no-ray`` never imports it.
"""

from __future__ import annotations

import argparse

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

settings (--set KEY=VALUE, or --config FILE.yaml): restoration.restore_settings' RestoreConfig, e.g.
predictor.strength=0.5, output.format=png, pipeline.max_actors=4; docs/cluster.md has the rest."""

FINETUNE_DESCRIPTION = """\
Fine-tune a model on your own clean images (degradations are synthesized), data-parallel on Ray
Train or in this process (--no-ray). Checkpoints and the final model go to STORAGE/NAME/; running
the same command again resumes; Ctrl-C or SIGTERM checkpoints the step in progress, then stops.

examples:
  restoration finetune --task denoise --train-images s3://bucket/clean/ --val-images s3://bucket/val/ \\
      --steps 3000 --workers 4 --use-gpu --storage s3://bucket/runs --name my-denoiser
  restoration finetune --task sr --init default --train-images clean/ --val-images val/ \\
      --storage runs --name my-sr --no-ray
  restoration finetune --task jpeg --config jobs/configs/jpeg.yaml --set optim.lr=1e-4 ...

settings (--set KEY=VALUE, or --config FILE.yaml): restoration.train_settings' TrainConfig, e.g.
steps, optim.lr, data.batch_size, checkpoint_interval, grace_seconds."""


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from jobs import finetune

    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on your own clean images with Ray Train (resumable)",
        description=FINETUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_arguments(p)
    p.set_defaults(func=finetune.run)


def _add_restore(sub: argparse._SubParsersAction) -> None:
    from jobs import restore

    p = sub.add_parser(
        "restore",
        help="restore an image collection (folder, s3:// prefix or URI list) with Ray Data (--no-ray: in this process)",
        description=RESTORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_arguments(p)
    p.set_defaults(func=restore.run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end demo on scikit-image's sample photos",
        description="Degrade scikit-image's sample photos, restore them and report PSNR before/after.",
    )
    p.add_argument("--output", default="demo-output", help="folder for the demo's results (demo-output)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps of the demo model")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(output=args.output, steps=args.steps)


SUBCOMMANDS = [_add_finetune, _add_restore, _add_demo]


def main(argv: list[str] | None = None) -> int:
    """The ``restoration`` console command: the library's subcommands plus the jobs'."""
    from restoration import cli

    return cli.main(argv, commands=[*cli.LIBRARY_COMMANDS, *SUBCOMMANDS])


if __name__ == "__main__":
    import sys

    sys.exit(main())
