"""The bench scripts that write results refuse arguments they cannot measure, in one argparse line,
before anything is measured or written."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import sequence_length  # noqa: E402


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cases", "lif:0"], "--cases: must be kind:T"),
        (["--cases", "conv:8"], "--cases: must be kind:T"),
        (["--cases", "lif:8,step"], "--cases: must be kind:T"),
        (["--modes", "loop,fast"], "--modes: must be loop, unrolled or both"),
    ],
)
def test_sequence_length_refuses_cases_and_modes_it_has_not(args, message, capsys, monkeypatch):
    monkeypatch.setattr(sequence_length, "run_case", lambda *a: pytest.fail("measured a refused case"))
    with pytest.raises(SystemExit) as done:
        sequence_length.main(args)
    assert done.value.code == 2 and message in capsys.readouterr().err


def test_sequence_length_reads_its_default_cases():
    cases = sequence_length.listed(sequence_length.case, "")(",".join(sequence_length.DEFAULT_CASES))
    assert cases[0] == ("lif", 8) and cases[-1] == ("step", 128) and len(cases) == 7
