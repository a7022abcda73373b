"""How tangled the code is: files over 400 lines, function-local imports of light modules, import cycles.

    python bench/import_graph.py [ROOT]

A function-local import is worth its surprise only when the module is heavy (TensorFlow, Keras,
kfp, scikit-learn, SciPy, matplotlib, MinIO, Jinja2, torchstain) or would close a cycle; a light
one (the standard library, or one of ours whose module-level imports stay light) belongs at the
top. Cycles count every import, local or not, between the project's own modules. A component's
imports live in its function body by necessity (KFP copies the function's source, not its
module), so components/ is left out of that count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

HEAVY = {
    "tensorflow",
    "keras",
    "kfp",
    "sklearn",
    "scipy",
    "matplotlib",
    "minio",
    "jinja2",
    "torchstain",
    "skimage",
    "google",
    "urllib3",
    "selenium",
    "yaml",
}
PACKAGES = ("leukemia_mtl", "components", "runners")
LONG = 400


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    if (root / "pipeline.py").is_file():
        found["pipeline"] = root / "pipeline.py"
    return found


def _imports(path: Path, module: str, modules: dict[str, Path]) -> tuple[set[str], set[str], list[tuple[int, str]]]:
    """(project modules imported at module level, third-party tops imported at module level, local imports)."""
    tree = ast.parse(path.read_text())
    top_level_nodes = set()
    for node in tree.body:
        for child in ast.walk(node):
            if isinstance(node, (ast.Import, ast.ImportFrom)) or not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                top_level_nodes.add(id(child))
    ours_top, third_top, local = set(), set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        at_top = id(node) in top_level_nodes
        for name in names:
            target = name if name in modules else None
            if target is None:
                if name.split(".")[0] in PACKAGES + ("pipeline",):
                    continue  # `from pkg.mod import function`: the module is named separately
                if at_top:
                    third_top.add(name.split(".")[0])
                else:
                    local.append((node.lineno, name.split(".")[0]))
                continue
            if at_top:
                ours_top.add(target)
            else:
                local.append((node.lineno, target))
    return ours_top, third_top, local


def measure(root: Path) -> dict:
    modules = _modules(root)
    parsed = {m: _imports(p, m, modules) for m, p in modules.items()}

    def heavy(module: str, seen: set | None = None) -> bool:
        if module not in modules:
            return module in HEAVY
        seen = seen if seen is not None else set()
        if module in seen:
            return False
        seen.add(module)
        ours, third, _ = parsed[module]
        return bool(third & HEAVY) or any(heavy(m, seen) for m in ours)

    edges = {m: set(parsed[m][0]) | {t for _, t in parsed[m][2] if t in modules} for m in modules}
    long_files = sorted((len(p.read_text().splitlines()), str(p.relative_to(root))) for p in modules.values())
    long_files = [(n, f) for n, f in long_files if n > LONG]
    light_local = [
        (str(modules[m].relative_to(root)), line, t)
        for m in modules
        if not m.startswith("components")
        for line, t in parsed[m][2]
        if not heavy(t) and t != m and not _closes_cycle(edges, m, t)
    ]
    return {
        "long_files": long_files,
        "light_local_imports": light_local,
        "cycles": _cycles(edges),
        "modules": len(modules),
        "lines": sum(len(p.read_text().splitlines()) for p in modules.values()),
    }


def _closes_cycle(edges: dict[str, set[str]], source: str, target: str) -> bool:
    """Would importing `target` at the top of `source` make a cycle (target reaches source)?"""
    stack, seen = [target], set()
    while stack:
        node = stack.pop()
        if node == source:
            return True
        if node in seen:
            continue
        seen.add(node)
        stack.extend(edges.get(node, ()))
    return False


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), package parents excluded."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w.startswith(v + ".") or v.startswith(w + "."):
                continue  # a package and its own submodule
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    result = measure(root)
    print(f"{result['modules']} modules, {result['lines']} lines")
    print(f"files over {LONG} lines: {len(result['long_files'])}")
    for n, f in result["long_files"]:
        print(f"  {n:5d} {f}")
    print(f"function-local imports of light modules: {len(result['light_local_imports'])}")
    for f, line, target in result["light_local_imports"]:
        print(f"  {f}:{line} {target}")
    print(f"import cycles: {len(result['cycles'])}")
    for cycle in result["cycles"]:
        print("  " + " <-> ".join(cycle))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
