"""scripts/bench_common.py, the helpers every benchmark script uses: atomic writes (the old file
survives a failing write, no temporary file is left), the shared JSON results file, the
Markdown header, the command line, dates and the machine facts."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))  # scripts/ is not a package

import bench_common as bc


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- atomic writes ----------------------------------------------------------------------------------


def test_write_text_atomic_creates_folders_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out" / "result.md"
    bc.write_text_atomic(path, "# title\n")
    bc.write_text_atomic(path, "# second\n")  # over an existing file
    assert path.read_text(encoding="utf-8") == "# second\n"
    assert names(path.parent) == ["result.md"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, not mkstemp's 0o600


def test_failing_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "result.json"
    bc.write_json_atomic(path, {"old": 1})
    before = path.read_text(encoding="utf-8")
    with pytest.raises(TypeError):
        bc.write_bytes_atomic(path, "not bytes")  # fails inside the write, after the temp file exists
    with pytest.raises(RuntimeError), bc.atomic_path(path) as tmp:
        tmp.write_text('{"half": ', encoding="utf-8")
        raise RuntimeError("interrupted")
    assert path.read_text(encoding="utf-8") == before
    assert names(tmp_path) == ["result.json"]


def test_atomic_path_keeps_the_suffix_for_writers_that_append_one(tmp_path):
    path = tmp_path / "cache.npz"
    with bc.atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz" and tmp != path
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x" and names(tmp_path) == ["cache.npz"]


def test_write_json_atomic_format(tmp_path):
    path = tmp_path / "r.json"
    bc.write_json_atomic(path, {"a": [1, 2]}, indent=1)
    assert path.read_text(encoding="utf-8") == '{\n "a": [\n  1,\n  2\n ]\n}\n'
    with pytest.raises(ValueError):
        bc.write_json_atomic(path, {"a": float("nan")}, allow_nan=False)
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": [1, 2]}


# -- results files --------------------------------------------------------------------------------


def test_update_json_merges_changes_into_the_file(tmp_path):
    path = tmp_path / "results" / "fewshot.json"

    def empty():
        return {"runs": [], "records": []}

    bc.update_json(path, lambda d: d["runs"].append({"command": "first"}), empty, indent=1)
    data = bc.update_json(path, lambda d: d["records"].append({"k": 5}), empty, indent=1)
    assert data == {"runs": [{"command": "first"}], "records": [{"k": 5}]}
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert names(path.parent) == ["fewshot.json", "fewshot.lock"]


def test_update_json_leaves_the_file_alone_when_the_change_fails(tmp_path):
    path = tmp_path / "r.json"
    bc.write_json_atomic(path, {"n": 1})

    def change(data):
        data["n"] = 2
        raise KeyError("boom")

    with pytest.raises(KeyError):
        bc.update_json(path, change)
    assert json.loads(path.read_text(encoding="utf-8")) == {"n": 1}


def test_write_results_writes_json_then_markdown(tmp_path):
    json_path, md_path = bc.write_results(tmp_path / "out", "speed", {"x": 1}, lambda d: f"x is {d['x']}\n")
    assert (json_path.name, md_path.name) == ("speed.json", "speed.md")
    assert json.loads(json_path.read_text(encoding="utf-8")) == {"x": 1}
    assert md_path.read_text(encoding="utf-8") == "x is 1\n"

    def broken(data):
        raise ValueError("render failed")

    with pytest.raises(ValueError):
        bc.write_results(tmp_path / "out", "speed", {"x": 2}, broken)
    assert json.loads(json_path.read_text(encoding="utf-8")) == {"x": 2}  # the measurements are kept
    assert md_path.read_text(encoding="utf-8") == "x is 1\n"
    assert names(tmp_path / "out") == ["speed.json", "speed.md"]


def test_header_has_command_machine_and_date():
    command = bc.command_line(REPO / "scripts" / "bench_index.py", ["--quick", "--output-dir", "/tmp/a b"])
    fields = [("Command", bc.code(command)), ("Date", "Fri Nov 27 22:04:17 UTC 2026"), ("Machine", "2 cores, AMD EPYC")]
    assert bc.header_lines(fields, title="Index benchmark") == [
        "# Index benchmark",
        "",
        "Command: `python scripts/bench_index.py --quick --output-dir '/tmp/a b'`  ",
        "Date: Fri Nov 27 22:04:17 UTC 2026  ",
        "Machine: 2 cores, AMD EPYC",
        "",
    ]
    assert bc.header_lines(fields[1:], bullets=True) == [
        "- Date: Fri Nov 27 22:04:17 UTC 2026", "- Machine: 2 cores, AMD EPYC", ""]


def test_command_line():
    script = REPO / "scripts" / "bench_speed.py"
    assert bc.command_line(script, []) == "python scripts/bench_speed.py"
    assert bc.command_line(script, ["--quick"], prefix="HF_HUB_OFFLINE=1 ") == (
        "HF_HUB_OFFLINE=1 python scripts/bench_speed.py --quick")


def test_markdown_table():
    assert bc.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]


# -- dates, machine, libraries ----------------------------------------------------------------------


def test_utc_date_styles():
    when = dt.datetime(2026, 11, 7, 9, 5, 3, tzinfo=dt.timezone.utc)
    assert bc.utc_date(bc.DATE_ISO, when) == "2026-11-07T09:05:03+00:00"
    assert bc.utc_date(bc.DATE_MINUTES, when) == "2026-11-07 09:05 UTC"
    assert bc.utc_date(bc.DATE_COMMAND, when) == "Sat Nov  7 09:05:03 UTC 2026"
    with pytest.raises(ValueError):
        bc.utc_date("rfc", when)


@pytest.mark.skipif(shutil.which("date") is None or sys.platform != "linux", reason="GNU date")
def test_date_style_is_what_date_prints():
    when = dt.datetime(2026, 11, 27, 22, 4, 17, tzinfo=dt.timezone.utc)
    env = {**os.environ, "LC_ALL": "C"}
    printed = subprocess.run(["date", "-u", "-d", f"@{int(when.timestamp())}"], capture_output=True, text=True,
                             env=env, check=True).stdout.strip()
    assert bc.utc_date(bc.DATE_COMMAND, when) == printed


def test_cpuinfo_field_reads_the_first_value():
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel\t\t: 1\nflags\t\t: fma avx2\nprocessor\t: 1\nmodel name\t: other\n"
    assert bc.cpuinfo_field("model name", text) == "AMD EPYC 7B13"
    assert bc.cpuinfo_field("model", text) == "1"
    assert bc.cpuinfo_field("flags", text) == "fma avx2"
    assert bc.cpuinfo_field("vendor_id", text) is None


def test_machine_info():
    info = bc.machine_info()
    assert set(info) == {"cores", "cpu_model", "mem_total_gib", "platform", "python"}
    assert info["cores"] == os.cpu_count() and info["python"].count(".") == 2
    if Path("/proc/meminfo").is_file():
        assert info["mem_total_gib"] > 0


def test_load_average():
    values = bc.load_average()
    text = bc.load_average_text()
    if not Path("/proc/loadavg").is_file():
        assert values == [] and text == "unknown"
        return
    assert len(values) == 3 and all(v >= 0 for v in values)
    assert [len(x.split(".")[1]) for x in text.split()] == [2, 2, 2]


def test_versions_by_distribution_and_by_import_name():
    import numpy

    found = bc.versions(["numpy", "no-such-package-textmatch-test"])
    assert found == {"numpy": numpy.__version__, "no-such-package-textmatch-test": None}
    faiss = pytest.importorskip("faiss")
    assert bc.versions(["faiss"]) == {"faiss": faiss.__version__}  # provided by faiss-cpu
