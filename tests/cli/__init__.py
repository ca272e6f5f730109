"""Tests of the ``plantstream`` command line as a whole: assembly, errors, tables."""
