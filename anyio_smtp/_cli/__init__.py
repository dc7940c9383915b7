"""The command line: ``python -m anyio_smtp send|probe|serve`` (also ``anyio-smtp``).

One module per command, each with ``register(commands)``; ``_common`` holds what they
share (exit codes, targets, TLS contexts, output).  Only ``anyio_smtp.__main__`` imports
this package, so ``import anyio_smtp`` never loads it.
"""
