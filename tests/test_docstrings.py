"""The public API's docstrings: every name in ``snn_triton.__all__`` has the Args / Returns / Raises /
Example sections the API reference is built from, and every Example runs and prints what it shows."""

import doctest
import re

import pytest

import snn_triton as st

SECTIONS = ("Args:", "Returns:", "Raises:", "Examples:")
# SURROGATES is a dict: its docstring is in the source, beside the assignment (the API reference reads it there).
DOCUMENTED = [name for name in st.__all__ if name != "SURROGATES"]
DEPLOY = ("to_nir", "from_nir", "export_streaming")  # their examples need the deploy extra


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_docstring_has_every_section(name):
    doc = getattr(st, name).__doc__ or ""
    missing = [section for section in SECTIONS if not re.search(rf"^\s*{section}\s*$", doc, re.MULTILINE)]
    assert not missing, f"st.{name}'s docstring lacks {missing}"


@pytest.mark.parametrize("name", DOCUMENTED)
def test_public_docstring_example_runs(name):
    if name in DEPLOY:
        pytest.importorskip("nir", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
        pytest.importorskip("onnxscript", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
    tests = doctest.DocTestFinder(recurse=False).find(getattr(st, name), name, globs={})
    examples = sum(len(t.examples) for t in tests)
    assert examples, f"st.{name}'s Example has no >>> lines"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"st.{name}'s Example printed something other than it shows"


def test_surrogates_registry_is_documented_in_source():
    source = open(st.surrogate.__file__).read()
    assert re.search(r'^SURROGATES: .*\n"""', source, re.MULTILINE), "SURROGATES lost its docstring"
