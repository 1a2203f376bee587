"""The package's imports go one way: no cycle, and each module only from the README's lower rows.

Every .py under vatt_gh/ is parsed with `ast` (nothing is imported); each `import vatt_gh.x`
or `from vatt_gh... import y` anywhere in a file, at module level or inside a function, is an
edge. Importing a package runs its __init__, so an edge to `vatt_gh.a.b` is also one to the
package `vatt_gh.a`, unless the importing module lies inside `vatt_gh.a` (its package has
started before it, as Python loads a package before its modules).
"""

import ast
import os

PACKAGE = "vatt_gh"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def module_name(path: str, root: str) -> str:
    rel = os.path.relpath(path, os.path.dirname(root))[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set) -> set:
    """Modules of the package that `tree` imports, anywhere in the file."""
    here = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from ..y import z
                parts = here.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            # `from a import b` imports a, and a.b when b is a module
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for i in range(2, len(parts) + 1):  # the module and the packages it lies in
                if ".".join(parts[:i]) in known:
                    found.add(".".join(parts[:i]))
    parts = module.split(".")
    return found - {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def import_graph(root: str = ROOT) -> dict:
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                files[module_name(path, root)] = path
    known = set(files)
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        graph[module] = imported_modules(tree, module, path.endswith("__init__.py"), known)
    return graph


def find_cycle(graph: dict):
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    colour = {node: "white" for node in graph}
    stack = []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt) :] + [nxt]
            if colour.get(nxt) == "white":
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(graph):
        if colour[node] == "white":
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_sees_a_function_level_cycle(tmp_path):
    """The old tree's circle: launch imported loop inside a function, loop imported launch."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "launch.py").write_text("def parse_gin():\n    import vatt_gh.loop  # noqa\n")
    (package / "loop.py").write_text("from vatt_gh import launch\n")
    (package / "trainer.py").write_text("from . import losses\n")
    (package / "losses.py").write_text("import os\n")
    graph = import_graph(str(package))
    assert graph["vatt_gh.trainer"] == {"vatt_gh.losses"}
    assert find_cycle(graph) in (
        ["vatt_gh.launch", "vatt_gh.loop", "vatt_gh.launch"],
        ["vatt_gh.loop", "vatt_gh.launch", "vatt_gh.loop"],
    )
    (package / "loop.py").write_text("import os\n")
    assert find_cycle(import_graph(str(package))) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "vatt_gh.loop" in graph and graph["vatt_gh.loop"]  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


RUN = (
    "loop",
    "pretraining",
    "finetuning",
    "checkpoints",
    "provision",
    "summaries",
    "input_state",
    "configs",
)
LAUNCH = ("cluster", "strategy_flags")


def reachable(graph: dict, module: str) -> set:
    """Every module `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_evaluation_imports_neither_the_run_nor_the_launch():
    """evaluation/ (metrics, probes, the fine-tuning recipe, figures) is used by the run and
    the tools, never the reverse: not even through another module."""
    graph = import_graph()
    banned = {f"{PACKAGE}.{m}" for m in RUN + LAUNCH}
    for module in graph:
        if module.startswith(f"{PACKAGE}.evaluation"):
            found = reachable(graph, module) & banned
            assert not found, f"{module} imports {sorted(found)}"


README = os.path.join(os.path.dirname(ROOT), "README.md")


def readme_layers(path: str = README) -> list:
    """The rows of the README's package map, top row first: each a list of top-level names of
    the package (`tools/` is outside it and left out); `# ...` ends a row's names."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    block = text.split("## Package map", 1)[1].split("```", 2)[1]
    rows = []
    for line in block.splitlines():
        names = [n.rstrip("/") for n in line.split("#", 1)[0].split()]
        names = [n for n in names if n != "tools"]
        if names:
            rows.append(names)
    return rows


def top_level(module: str) -> str:
    """vatt_gh.data.read -> data; vatt_gh.loop -> loop."""
    return module.split(".")[1] if module.count(".") else module


def layer_violations(graph: dict, rows: list) -> list:
    """'a -> b' for every import of a module from its own row or a row above (rows[0] is the
    top): each row may import only from the rows below it."""
    row_of = {name: i for i, names in enumerate(rows) for name in names}
    found = []
    for module, deps in sorted(graph.items()):
        a = top_level(module)
        for dep in sorted(deps):
            b = top_level(dep)
            if a != b and b != PACKAGE and a != PACKAGE and row_of[b] <= row_of[a]:
                found.append(f"{module} -> {dep}")
    return found


def test_the_layer_check_fails_on_an_upward_import(tmp_path):
    package = tmp_path / PACKAGE
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "__init__.py").write_text("")
    (package / "data" / "read.py").write_text("import os\n")
    (package / "trainer.py").write_text("from vatt_gh.data import read\n")
    (package / "loop.py").write_text("from vatt_gh import trainer\n")
    rows = [["loop"], ["trainer"], ["data"]]
    assert layer_violations(import_graph(str(package)), rows) == []
    (package / "data" / "read.py").write_text("def f():\n    from vatt_gh import loop\n")
    assert layer_violations(import_graph(str(package)), rows) == [
        "vatt_gh.data.read -> vatt_gh.loop"
    ]
    (package / "data" / "read.py").write_text("import os\n")
    (package / "loop.py").write_text("import os\n")
    (package / "trainer.py").write_text("from vatt_gh import loop\n")  # same row is upward too
    rows = [["loop", "trainer"], ["data"]]
    assert layer_violations(import_graph(str(package)), rows) == ["vatt_gh.trainer -> vatt_gh.loop"]


def test_imports_follow_the_readme_layers():
    """Every module of the package sits in one row of the README's package map and imports
    only from the rows below its own (function-level imports included)."""
    rows = readme_layers()
    listed = [name for names in rows for name in names]
    assert len(listed) == len(set(listed)), f"a name appears twice in the package map: {rows}"
    graph = import_graph()
    modules = {top_level(m) for m in graph if m != PACKAGE}
    assert modules == set(listed), (
        f"not in the package map: {sorted(modules - set(listed))}; "
        f"listed but absent: {sorted(set(listed) - modules)}"
    )
    found = layer_violations(graph, rows)
    assert not found, "imports from the same row or a row above: " + ", ".join(found)
