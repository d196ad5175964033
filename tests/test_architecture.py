"""The layout's rules, checked on the sources (DESIGN.md section 2 and the layout issue):
layers, not a web; no module reads another's underscore names; one public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import textmatch

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "textmatch"


def sources(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# -- imports between textmatch modules ----------------------------------------------------------
def imported_modules(path: Path, root: Path = REPO) -> set[str]:
    """Every textmatch module `path` imports, at the top or inside a function, as full names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "textmatch")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "textmatch":
                continue
            found.add(target)
            for alias in node.names:  # `from . import matching` imports a module
                if (root / (target.replace(".", "/") + "/" + alias.name + ".py")).exists():
                    found.add(f"{target}.{alias.name}")
    return found


def layer_violations(forbidden: dict[str, tuple[str, ...]], root: Path = REPO) -> list[str]:
    out = []
    for path in sources(root / "textmatch"):
        name = module_name(path, root)
        for prefix, banned in forbidden.items():
            if name == prefix or name.startswith(prefix + "."):
                for target in imported_modules(path, root):
                    if any(target == b or target.startswith(b + ".") for b in banned):
                        out.append(f"{name} imports {target}")
    return out


def test_layers_not_a_web():
    """core < classification, retrieval (siblings) < cli; the core uses the hub's resolution but
    not the model card; the maths and the bottom layers import (almost) nothing of ours."""
    above_core = ("textmatch.classification", "textmatch.retrieval", "textmatch.cli", "textmatch.hub.model_card")
    rules = {
        "textmatch.core": above_core,
        "textmatch.data": ("textmatch.core", "textmatch.backends", "textmatch.hub", *above_core),
        "textmatch.backends": ("textmatch.core", "textmatch.data", "textmatch.hub", *above_core),
        "textmatch.hub.resolution": ("textmatch.core", "textmatch.data", "textmatch.backends", *above_core),
        "textmatch.hub.push": ("textmatch.core", "textmatch.data", "textmatch.backends", *above_core),
        "textmatch.classification": ("textmatch.retrieval", "textmatch.cli"),
        "textmatch.retrieval": ("textmatch.classification", "textmatch.cli"),
        "textmatch.hub.model_card": ("textmatch.classification", "textmatch.retrieval", "textmatch.cli"),
        "textmatch.plots": ("textmatch.core", "textmatch.data", "textmatch.backends", "textmatch.hub", "textmatch.classification", "textmatch.retrieval", "textmatch.cli"),
    }
    assert layer_violations(rules) == []
    for path in sources(PACKAGE):  # the CLI is the only top floor
        if not module_name(path).startswith("textmatch.cli"):
            assert not any(t.startswith("textmatch.cli") for t in imported_modules(path)), path
    maths = imported_modules(PACKAGE / "core" / "matching.py")
    assert maths <= {"textmatch.errors"}, maths


def test_the_layer_check_sees_a_violation(tmp_path):
    """The checker is not blind: imports from the core up to retrieval are caught, relative,
    absolute and inside a function."""
    core = tmp_path / "textmatch" / "core"
    core.mkdir(parents=True)
    (core / "probe.py").write_text(
        "from ..retrieval import Retriever\n\ndef f():\n    import textmatch.cli\n", encoding="utf-8"
    )
    assert sorted(layer_violations({"textmatch.core": ("textmatch.retrieval", "textmatch.cli")}, tmp_path)) == [
        "textmatch.core.probe imports textmatch.cli",
        "textmatch.core.probe imports textmatch.retrieval",
    ]


# -- underscore names ----------------------------------------------------------------------------
def private_definitions(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, assigned names and attributes, and
    attributes named by string in register_buffer / setattr."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name)):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if func in ("register_buffer", "register_parameter", "setattr") and node.args:
                first = node.args[1] if func == "setattr" and len(node.args) > 1 else node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
    return {n for n in names if is_private(n)}


def private_reads(path: Path, ours: set[str]) -> list[str]:
    """Underscore names `path` reads that some other module of ours defines (or imports by name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = private_definitions(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("textmatch")):
            for alias in node.names:
                if is_private(alias.name):
                    out.append(f"{path.name}:{node.lineno} imports {alias.name}")
            if any(is_private(part) for part in (node.module or "").split(".")):
                out.append(f"{path.name}:{node.lineno} imports from private module {node.module}")
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            if is_private(node.attr) and node.attr not in own and node.attr in ours:
                out.append(f"{path.name}:{node.lineno} reads .{node.attr}")
    return out


def test_no_module_reads_another_modules_underscore_names():
    files = sources(PACKAGE, REPO / "scripts")
    ours = set().union(*(private_definitions(ast.parse(p.read_text(encoding="utf-8"))) for p in files))
    violations = [v for p in files for v in private_reads(p, ours)]
    assert violations == []


def test_the_private_read_check_sees_a_violation(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(model):\n    return model._support_emb, model.support_embeddings_\n", encoding="utf-8")
    ours = private_definitions(ast.parse((PACKAGE / "core" / "modeling.py").read_text(encoding="utf-8")))
    assert private_reads(probe, ours) == ["probe.py:2 reads ._support_emb"]
    probe.write_text("from textmatch.core.modeling import _eval_mode\n", encoding="utf-8")
    assert private_reads(probe, ours) == ["probe.py:1 imports _eval_mode"]


# -- the public API ------------------------------------------------------------------------------
PUBLIC_API = [
    "BeirData", "BiLSTMEncoder", "ClassSplit", "ContrastiveArguments", "ContrastiveTrainer", "DEFAULT_MODEL", "Encoder", "Episode", "EpisodeSampler",
    "EpisodicResult", "IndexConfig", "MatchingNetwork", "MatchingNetworkClassifier", "MatchingNetworkConfig",
    "ModelCardData", "RetrievalTrainer", "RetrievalTrainingArguments", "Retriever", "TextMatchError",
    "TrainOutput", "Trainer", "TrainingArguments", "TransformerEncoder", "__version__", "choose_threshold",
    "class_split_from_files", "evaluate", "evaluate_episodes", "filter_classes", "generate_model_card",
    "load_beir", "load_text_dataset", "oos_report", "random_class_split", "sample_dataset",
]


def test_public_api_is_pinned():
    assert sorted(textmatch.__all__) == sorted(PUBLIC_API)
    for name in PUBLIC_API:
        assert getattr(textmatch, name) is not None, name


# -- one list of each set of choices ---------------------------------------------------------------
def test_cli_choices_are_the_library_constants():
    from textmatch.backends import BACKENDS
    from textmatch.cli import build_parser
    from textmatch.retrieval.retriever import FUSIONS, MODES
    from textmatch.retrieval.vector_index import INDEX_KINDS

    want = {"backend": BACKENDS, "index_backend": INDEX_KINDS, "mode": MODES, "fusion": FUSIONS}
    seen = set()
    parser = build_parser()
    for sub in parser._subparsers._group_actions[0].choices.values():  # argparse keeps them there
        for action in sub._actions:
            if action.dest in want:
                assert action.choices is want[action.dest], (sub.prog, action.dest)
                seen.add(action.dest)
    assert seen == set(want)


@pytest.mark.parametrize("module", ["textmatch.cli.classify", "textmatch.cli.inspect", "textmatch.cli.pretrain", "textmatch.cli.retrieve", "textmatch.cli.share"])
def test_each_command_group_registers_its_commands(module):
    import importlib

    assert callable(importlib.import_module(module).add_parsers)
