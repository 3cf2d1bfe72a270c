"""``restoration finetune``, ``restore`` and ``distill``: the Ray jobs as subcommands.

Ray is imported only when a job runs, so ``restoration --help`` stays fast; ``restoration restore
--no-ray`` never imports it.
"""

from __future__ import annotations

import argparse

from restoration.cli import FINETUNE_DESCRIPTION, RESTORE_DESCRIPTION


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


def _add_distill(sub: argparse._SubParsersAction) -> None:
    from jobs import distill

    p = sub.add_parser(
        "distill",
        help="train a fast student model on a heavy teacher's outputs for a sample of your archive (resumable)",
        description=distill.DISTILL_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    distill.add_arguments(p)
    p.set_defaults(func=distill.run)


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
    """The demo is a program of its own (``python -m local.demo``) that runs these jobs: it stands
    above them, so the command starts it rather than importing it."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "local.demo", "--output", args.output]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    return subprocess.call(command)


SUBCOMMANDS = [_add_finetune, _add_restore, _add_distill, _add_demo]


def main(argv: list[str] | None = None) -> int:
    """The ``restoration`` console command: the library's subcommands plus the jobs'."""
    from restoration import cli

    return cli.main(argv, commands=[*cli.LIBRARY_COMMANDS, *SUBCOMMANDS])


if __name__ == "__main__":
    import sys

    sys.exit(main())
