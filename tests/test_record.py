"""experiments/record.py: a missing record is one line naming what to record, not a traceback."""

from __future__ import annotations

import importlib.util

from lettucify.config import REPO_ROOT

SCRIPT = REPO_ROOT / "experiments" / "record.py"


def test_the_readme_table_without_its_records_names_the_one_to_record(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("record", SCRIPT)
    record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(record)
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("unchanged\n")
    monkeypatch.setattr(record, "README", readme)

    assert record.main(["--readme"]) == 2
    first = record.TABLE[0][0]
    assert capsys.readouterr().err == (
        f"record.py: no record of {first} ({tmp_path / f'{first}.json'}): "
        f"record it first, python experiments/record.py {first}\n"
    )
    assert readme.read_text() == "unchanged\n"
