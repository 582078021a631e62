"""The import structure of `fdapt_core` (and `bench`): no cycle, drawn or hidden; no module
takes another's private names; a function imports one of the project's own modules only where
that module pulls in a heavy optional dependency, and says so.

Read from the source with `ast`, every import counted, those inside functions too (a cycle
hidden in a function is still a cycle: it only fails later, at the call)."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# (module, function) → the own module it imports inside the function, and why it may
# (the Flower launcher, which needs flwr and Ray, is named in executors.EXECUTORS and imported
# when a run under it starts, as an entry point is)
LAZY_OWN: dict = {
    # a Flower node answers each message from a fresh process: a query (which partition do
    # you hold?) must not pay torch's and transformers' imports
    ("fdapt_core.flower.client", "train"): "fdapt_core.flower.node",
    # the warm worker's socket and start-up are the ClientApp's too (thin); only the worker
    # process itself loads the training code
    ("fdapt_core.flower.worker", "serve"): "fdapt_core.flower.node",
}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


ALL = {**modules("fdapt_core"), **modules("bench")}


def targets(module: str, node: ast.AST) -> list[tuple[str, str]]:
    """(module imported, name taken from it or "") for one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, "") for a in node.names]
    if node.level:
        base = module.split(".")
        if ALL[module].name != "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    out = []
    for a in node.names:
        sub = f"{origin}.{a.name}"
        out.append((sub, "") if sub in ALL else (origin, a.name))
    return out


def imports(module: str):
    """(imported module, name, enclosing function or None, source line) of every import."""
    tree = ast.parse(ALL[module].read_text())
    lines = ALL[module].read_text().splitlines()
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else function
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target, name in targets(module, child):
                    found.append((target, name, function, lines[child.lineno - 1]))
            visit(child, inner)

    visit(tree, None)
    return found


def graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _, _ in imports(m) if t in ALL and t != m} for m in ALL}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_the_cycle_finder_finds_a_hidden_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_module_takes_another_modules_private_names():
    taken = [(m, t, name) for m in ALL for t, name, _, _ in imports(m)
             if t in ALL and name.startswith("_") and not name.startswith("__")]
    assert taken == []


def test_own_modules_are_imported_inside_functions_only_for_a_heavy_optional_dependency():
    lazy = {(m, fn): t for m in ALL if m.startswith("fdapt_core")
            for t, _, fn, _ in imports(m) if fn is not None and t in ALL}
    assert lazy == LAZY_OWN
    for (m, fn), t in LAZY_OWN.items():  # and the line says why
        line = next(src for tt, _, f, src in imports(m) if f == fn and tt == t)
        assert "#" in line, line


# third-party packages a function may import at first use: heavy and needed by few runs
# (datasets: only to tokenize a corpus not yet cached; a Flower node's fresh process reads
# the cache with pyarrow; mlflow and torch.utils.tensorboard: only where a run is tracked,
# from the `tracking` extra)
LAZY_THIRD_PARTY = {"peft", "deepspeed", "flwr", "datasets", "mlflow",
                    "torch.utils.tensorboard"}


def test_third_party_imports_inside_functions_are_only_heavy_optional_ones_and_say_why():
    """Everything else a module needs is imported at its top, where a reader sees it."""
    found = []
    for m in ALL:
        if not m.startswith("fdapt_core"):
            continue
        lines = ALL[m].read_text().splitlines()
        for t, _, fn, src in imports(m):
            if fn is None or t in ALL or t.split(".")[0] in ("fdapt_core", "bench"):
                continue
            at = lines.index(src)
            if t.split(".")[0] not in LAZY_THIRD_PARTY and t not in LAZY_THIRD_PARTY:
                found.append(f"{m}.{fn}: {src.strip()}")
            elif "#" not in src and not lines[at - 1].strip().startswith("#"):
                found.append(f"{m}.{fn}: {src.strip()} (no comment saying why)")
    assert found == []


def test_only_the_executor_table_compares_executor_names():
    """`executors.EXECUTORS` is the one table of executors: every other file asks its row
    (ranks, remote, extra), so adding an executor touches one table, not seven files."""
    import re

    pattern = re.compile(r"dist\.executor\s*(==|!=|\bin\b|\bnot in\b)|\bexecutor\s*(==|!=)\s*[\"']")
    offenders = []
    for path in sorted(ROOT.glob("fdapt_core/**/*.py")) + sorted(ROOT.glob("bench/**/*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
