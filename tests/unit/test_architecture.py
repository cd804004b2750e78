"""The project's layering, read from its import statements (module level and inside functions), and its packaging.

``cli -> commands -> runner + stages -> autolabel``: no import cycle among the project's own modules, the library
never imports the pipeline layer, and HandsOff and Hi-LANDER never import each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOPS = {"autolabel": ROOT / "platform" / "autolabel", "pipelines": ROOT / "pipelines"}


def _modules() -> dict[str, Path]:
    mods = {}
    for top, root in TOPS.items():
        for path in root.rglob("*.py"):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    keep = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*keep, base] if base else keep)
                names = [base, *(f"{base}.{a.name}" for a in node.names)]
            for name in names:
                target = owner(name)
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_the_projects_modules():
    graph = _import_graph()
    assert "pipelines.cli" in graph and "autolabel.engine.dist" in graph
    assert "pipelines.commands.base" in graph["pipelines.cli"]  # the graph sees real edges
    assert _cycles(graph) == []


def test_imports_run_one_way():
    graph = _import_graph()
    back = sorted(
        (m, t) for m, ts in graph.items() if m.startswith("autolabel") for t in ts if t.startswith("pipelines")
    )
    assert back == [], "the library must not import the pipeline layer"
    layer = {"pipelines.cli": 0, "pipelines.commands": 1, "pipelines.stages": 2, "pipelines.definitions": 2}

    def rank(mod: str) -> int | None:
        return next((r for prefix, r in layer.items() if mod == prefix or mod.startswith(prefix + ".")), None)

    upward = [
        (m, t)
        for m, ts in graph.items()
        for t in ts
        if rank(m) is not None and rank(t) is not None and rank(t) < rank(m)
    ]
    assert upward == [], "stages never import commands, commands never import the CLI"
    for a, b in (("autolabel.handsoff", "autolabel.hilander"), ("autolabel.hilander", "autolabel.handsoff")):
        assert not [(m, t) for m, ts in graph.items() if m.startswith(a) for t in ts if t.startswith(b)]


def test_every_package_and_the_configs_ship_in_the_wheel():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert on_disk <= set(setup["packages"]), f"add {sorted(on_disk - set(setup['packages']))} to pyproject packages"
    assert setup["package-dir"]["autolabel.configs"] == "configs" and "autolabel.configs" in setup["packages"]
    patterns = setup["package-data"]["autolabel.configs"]
    yamls = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*.yaml"))
    assert yamls and all(any(y.match(pat) for pat in patterns) for y in yamls)


def test_configs_dir_prefers_the_packaged_copy(tmp_path, monkeypatch):
    from autolabel.config import configs_dir, loader

    monkeypatch.delenv("AUTOLABEL_CONFIGS", raising=False)
    assert (configs_dir() / "pipeline" / "handsoff_then_hilander.yaml").is_file()  # the source checkout's configs/
    installed = tmp_path / "site-packages" / "autolabel"
    (installed / "config").mkdir(parents=True)
    (installed / "configs" / "pipeline").mkdir(parents=True)
    monkeypatch.setattr(loader, "__file__", str(installed / "config" / "loader.py"))
    assert configs_dir() == installed / "configs"  # a wheel install: package data, no source checkout needed


def _classes_with_base(path: Path, base_names: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = {ast.unparse(b) for b in node.bases}
            if bases & base_names:
                out.append(node.name)
    return out


def test_one_naming_rule_for_lightning_wrappers():
    # a plain nn.Module lives in <name>.py; the LightningModule that trains it, and nothing else of the kind, in
    # <name>_module.py next to it (stylegan2 / stylegan2_module, lander / lander_module, ...)
    lightning = {"pl.LightningModule", "LightningModule", "pytorch_lightning.LightningModule"}
    plain = {"nn.Module", "torch.nn.Module", "Module"}
    wrappers = []
    for name, path in _modules().items():
        if not name.startswith("autolabel."):
            continue
        found = _classes_with_base(path, lightning)
        if path.stem.endswith("_module"):
            assert found, f"{path.name} holds no LightningModule: only Lightning wrappers are named *_module.py"
            assert (path.parent / (path.stem[: -len("_module")] + ".py")).is_file(), f"{path.name} has no sibling model"
            assert not _classes_with_base(path, plain), f"{path.name} defines a plain nn.Module: move it to its model"
            wrappers.append(path.stem)
        else:
            assert not found, f"{name} defines LightningModule {found}: move it to <model>_module.py"
    assert len(wrappers) >= 7, wrappers


def test_one_constructor_style_for_lightning_modules():
    # every LightningModule takes its config dataclass(es) first and reads them through config.core.as_config (a
    # dataclass, a dict from its checkpoint, or an OmegaConf node); facts read from the data are keyword-only after
    lightning = {"pl.LightningModule", "LightningModule", "pytorch_lightning.LightningModule"}
    checked = []
    for name, path in _modules().items():
        if not name.startswith("autolabel."):
            continue
        tree = ast.parse(path.read_text())
        for cls in tree.body:
            if not (isinstance(cls, ast.ClassDef) and {ast.unparse(b) for b in cls.bases} & lightning):
                continue
            init = next(f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
            calls = {ast.unparse(c.func) for c in ast.walk(init) if isinstance(c, ast.Call)}
            assert "as_config" in calls, f"{cls.name}.__init__ does not read its config through as_config"
            first = init.args.args[1] if len(init.args.args) > 1 else None
            assert first is not None and first.annotation is not None, f"{cls.name}: the config comes first"
            assert "Config" in ast.unparse(first.annotation), f"{cls.name}: first argument is not a config dataclass"
            checked.append(cls.name)
    assert len(checked) >= 7, checked
