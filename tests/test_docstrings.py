"""The examples in the public API's docstrings run as written (doctest)."""

import doctest

import pytest

import em

PUBLIC = sorted(name for name in em.__all__ if getattr(em, name).__doc__ and ">>>" in getattr(em, name).__doc__)


def test_the_public_api_has_examples():
    assert {"fit", "algorithm", "log_likelihood", "posterior"} <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_example(name):
    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(getattr(em, name), name, globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
