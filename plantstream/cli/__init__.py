"""The ``plantstream`` command line: one Typer application assembled in :mod:`plantstream.cli.main`."""
