"""Ray entrypoints: thin adapters over the ``restoration`` library.

Each job is a module runnable as ``python -m jobs.<name>`` and submittable with
``ray job submit --working-dir . -- python -m jobs.<name> ...``; the same code backs the
``restoration <name>`` subcommands.
"""
