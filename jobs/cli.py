"""``restoration finetune`` and ``restoration restore``: the Ray jobs as subcommands.

Ray is imported only when a job runs, so ``restoration --help`` stays fast.
"""

from __future__ import annotations

import argparse


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from jobs import finetune

    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on your own clean images with Ray Train (resumable)",
        description=finetune.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    finetune.add_arguments(p)
    p.set_defaults(func=finetune.run)


def _add_restore(sub: argparse._SubParsersAction) -> None:
    from jobs import restore

    p = sub.add_parser(
        "restore",
        help="restore an image collection (folder, s3:// prefix or URI list) with Ray Data",
        description=restore.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore.add_arguments(p)
    p.set_defaults(func=restore.run)


SUBCOMMANDS = [_add_finetune, _add_restore]
