"""What the benchmark scripts share: facts about the machine and the libraries, the exact
command and the date of a run, atomic file writes and the results files.

The scripts in this folder import it as `from bench_common import ...`: run as
`python scripts/bench_x.py`, Python puts scripts/ first on sys.path; each script also inserts
its own folder there, so that it can be imported from elsewhere (the tests).

Every write goes through textmatch's one write protocol (`textmatch.files.atomic_path`): a
temporary file in the target's folder, fsynced and renamed, so a reader never sees a
half-written file and a failed write leaves the old file as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # textmatch from this checkout, also when imported from elsewhere

from textmatch.files import atomic_path  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"  # the benchmark data, next to the repository

DATE_COMMAND = "date"  # utc_date style: what `date -u` prints, "Fri Nov 27 22:04:17 UTC 2026"
DATE_MINUTES = "minutes"  # "2026-11-27 22:15 UTC"
DATE_ISO = "iso"  # "2026-11-27T22:15:03+00:00"


# -- the machine and the libraries ------------------------------------------------------------


def read_proc(name: str) -> str:
    """The text of /proc/<name>, or "" where there is none (not Linux) or it cannot be read."""
    try:
        return Path("/proc", name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpuinfo_field(name: str, cpuinfo: str | None = None) -> str | None:
    """The first value of field `name` ("model name", "flags", ...) in /proc/cpuinfo, stripped;
    None where the field is absent. `cpuinfo` is the file's text, read when not given."""
    text = read_proc("cpuinfo") if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_model() -> str | None:
    """The CPU's model name ("AMD EPYC 7B13"), None where /proc/cpuinfo does not say."""
    return cpuinfo_field("model name")


def memory_total_gib() -> float | None:
    """Total memory in GiB (one decimal) from /proc/meminfo, None where unknown."""
    for line in read_proc("meminfo").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemTotal:":
            return round(int(fields[1]) / 2**20, 1)  # kB -> GiB
    return None


def machine_info() -> dict[str, Any]:
    """cores (logical CPUs), cpu_model and mem_total_gib (None where unknown), platform, python."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gib": memory_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution ("faiss-cpu"), None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """{name: installed version, None if not installed} for distribution names ("torch",
    "sentence-transformers") or import names ("faiss": the version of the distribution that
    provides it, faiss-cpu). Nothing is imported."""
    out: dict[str, str | None] = {}
    for name in packages:
        found = installed_version(name)
        if found is None:  # an import name: ask the distributions that provide it
            providers = metadata.packages_distributions().get(name, [])
            found = next((v for v in map(installed_version, providers) if v is not None), None)
        out[name] = found
    return out


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages; [] where /proc/loadavg is missing."""
    try:
        return [float(x) for x in read_proc("loadavg").split()[:3]]
    except ValueError:
        return []


def load_average_text() -> str:
    """The load averages as /proc/loadavg writes them ("0.52 0.61 1.00"), or "unknown"."""
    values = load_average()
    return " ".join(f"{x:.2f}" for x in values) if values else "unknown"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- the run: command and date -------------------------------------------------------------------


def command_line(script: str | Path, args: Sequence[str], prefix: str = "") -> str:
    """The command that reproduces this run from the repository root, arguments quoted:
    "python scripts/bench_x.py --quick", after `prefix` ("HF_HUB_OFFLINE=1 ") if given."""
    path = Path(script).resolve()
    shown = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(script)
    return f"{prefix}python {shlex.join([shown, *args])}"


def utc_date(style: str = DATE_ISO, when: dt.datetime | None = None) -> str:
    """The UTC date and time (now, or `when`) in one of the styles the results files use:
    DATE_ISO, DATE_MINUTES or DATE_COMMAND."""
    t = (when or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    if style == DATE_ISO:
        return t.isoformat(timespec="seconds")
    if style == DATE_MINUTES:
        return t.strftime("%Y-%m-%d %H:%M UTC")
    if style == DATE_COMMAND:  # the day of the month is padded with a space, as `date` does
        return f"{t:%a %b} {t.day:2d} {t:%H:%M:%S} UTC {t.year}"
    raise ValueError(f"unknown date style {style!r}; use DATE_ISO, DATE_MINUTES or DATE_COMMAND")


# -- atomic writes: textmatch's one write protocol (textmatch.files.atomic_path) ---------------------


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def json_text(data: Any, indent: int = 2, allow_nan: bool = True) -> str:
    """`data` as indented JSON with a final newline (allow_nan=False: NaN or inf is an error)."""
    return json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n"


def write_json_atomic(path: str | Path, data: Any, indent: int = 2, allow_nan: bool = True) -> None:
    """Write `data` to `path` as JSON (see json_text), atomically."""
    write_text_atomic(path, json_text(data, indent, allow_nan))


# -- results files ---------------------------------------------------------------------------------


def update_json(path: str | Path, change: Callable[[Any], None], empty: Callable[[], Any] = dict, indent: int = 2) -> Any:
    """Read-modify-write of a JSON results file that several runs may share: under an
    exclusive lock on <path>.lock, read it (`empty()` when missing), let `change` modify the
    data in place, write it back atomically. Returns the data written."""
    import fcntl  # Unix only, like the benchmarks

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else empty()
        change(data)
        write_json_atomic(path, data, indent)
    return data


def write_results(out_dir: str | Path, stem: str, data: Any, render: Callable[[Any], str], indent: int = 2,
                  allow_nan: bool = True) -> tuple[Path, Path]:
    """Write <out_dir>/<stem>.json, then <out_dir>/<stem>.md = render(data), each atomically
    (the JSON survives a failing render). Returns both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    write_json_atomic(json_path, data, indent, allow_nan)
    write_text_atomic(md_path, render(data))
    return json_path, md_path


def header_lines(fields: Sequence[tuple[str, str]], title: str | None = None, bullets: bool = False) -> list[str]:
    """The run's facts at the top of a Markdown results file, one "Name: value" each (the
    command, the date, the machine, ...), then a blank line; "# title" and a blank line first
    when given. As a list ("- Name: value") with bullets, else one paragraph with a hard line
    break (two trailing spaces) after every line but the last."""
    if bullets:
        lines = [f"- {name}: {value}" for name, value in fields]
    else:
        lines = [f"{name}: {value}" + ("  " if i < len(fields) - 1 else "") for i, (name, value) in enumerate(fields)]
    return ([f"# {title}", ""] if title else []) + lines + [""]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table: the header row, the separator, one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def code(text: str) -> str:
    """`text` as inline Markdown code (the command in a header)."""
    return f"`{text}`"
