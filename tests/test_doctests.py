"""The runnable examples in every plantstream module's docstrings, imported by their package name.

Doctests are collected here rather than by ``pytest --doctest-modules``: pytest would import
``flows/oee.py`` from the source tree as a second module ``flows.oee`` beside the installed
``plantstream.flows.oee``.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import plantstream

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _modules() -> list[str]:
    names = ["plantstream"]
    for info in pkgutil.walk_packages(plantstream.__path__, "plantstream."):
        names.append(info.name)
    return sorted(names)


MODULES = _modules()


def test_every_subpackage_is_walked() -> None:
    for pkg in ("schemas", "operators", "connectors", "flows", "cli"):
        assert f"plantstream.{pkg}" in MODULES, pkg


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
