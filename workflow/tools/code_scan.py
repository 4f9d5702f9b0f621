"""Two scans of the package source, for code review (not a gate):

    python workflow/tools/code_scan.py long [--max 60]   functions longer than --max lines (decorators included)
    python workflow/tools/code_scan.py unused            module-level functions, classes and constants, and methods,
                                                         whose name occurs nowhere else in workflow/, tests/ or the
                                                         Snakefile (a name used only where it is defined)
    python workflow/tools/code_scan.py params            parameters a function never reads (self, cls, *args,
                                                         **kwargs and `_`-prefixed names aside)

`unused` is a name search, like vulture without its confidence levels: a hit is a candidate to check by grep
(a name built with getattr, a pytest fixture or a Snakemake-injected name is no hit by construction).
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "workflow" / "ctxcomp"
SEARCHED = [ROOT / "workflow", ROOT / "tests", ROOT / "Snakefile"]


def _files(where: list[Path], suffixes: tuple[str, ...]) -> list[Path]:
    out = []
    for p in where:
        out += [p] if p.is_file() else [f for f in p.rglob("*") if f.suffix in suffixes and f.is_file()]
    return sorted(out)


def long_functions(limit: int) -> list[tuple[int, str]]:
    """(lines, "path:line name") of every function or method over `limit` lines."""
    out = []
    for f in _files([PKG], (".py",)):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                n = node.end_lineno - start + 1
                if n > limit:
                    out.append((n, f"{f.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def _definitions(tree: ast.Module) -> list[tuple[str, int]]:
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append((node.name, node.lineno))
            if isinstance(node, ast.ClassDef):
                out += [(m.name, m.lineno) for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and not (m.name.startswith("__") and m.name.endswith("__"))]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out += [(t.id, node.lineno) for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
    return out


def unused_names() -> list[str]:
    texts = {f: f.read_text() for f in _files(SEARCHED, (".py", ".smk", ".yaml", ".toml", ".md", ".rst"))}
    words: dict[str, int] = {}
    for text in texts.values():
        for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
            words[w] = words.get(w, 0) + 1
    out = []
    for f in _files([PKG], (".py",)):
        for name, line in _definitions(ast.parse(texts[f])):
            if name.startswith("test_") or name in ("main", "__all__"):
                continue
            if words.get(name, 0) <= 1:  # the definition itself is the only occurrence
                out.append(f"{f.relative_to(ROOT)}:{line} {name}")
    return out


def unused_parameters() -> list[str]:
    """Parameters never read in their function's body. Callbacks with a fixed signature (signal handlers,
    jsonschema validators, protocol methods) are hits by design: check each."""
    out = []
    for f in _files([PKG], (".py",)):
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body[1:] if ast.get_docstring(node) is not None else node.body
            if not body or all(isinstance(b, (ast.Pass, ast.Expr)) for b in body):
                continue  # an abstract or protocol method
            read = {n.id for b in body for n in ast.walk(b) if isinstance(n, ast.Name)}
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if a.arg not in ("self", "cls") and not a.arg.startswith("_") and a.arg not in read:
                    out.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name}({a.arg})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan", choices=["long", "unused", "params"])
    ap.add_argument("--max", type=int, default=60, help="longest function allowed by `long` (lines)")
    ns = ap.parse_args(argv)
    if ns.scan == "long":
        for n, where in long_functions(ns.max):
            print(f"{n:4d}  {where}")
    else:
        print("\n".join(unused_names() if ns.scan == "unused" else unused_parameters()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
