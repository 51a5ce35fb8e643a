"""Count a package's lines of code: no blank lines, comments or docstrings.

How the server's size is tracked (docs/architecture.md)::

    python scripts/code_lines.py packages/joblib-server/src            # the working tree
    python scripts/code_lines.py packages/joblib-server/src --rev e160703 --files

``--rev`` reads the files at a git revision instead of the working tree; ``--files`` lists
each file's count. A line counts when any token other than a comment sits on it; the
docstrings of modules, classes and functions do not count (other strings do).

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import tokenize
from pathlib import Path

_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}
_WITH_DOCSTRING = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def code_lines(source: str) -> int:
    """The number of lines of ``source`` holding code (not docstrings or comments)."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, _WITH_DOCSTRING) or not node.body:
            continue
        first = node.body[0]
        value = first.value if isinstance(first, ast.Expr) else None
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            docstrings.update(range(first.lineno, (first.end_lineno or 0) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def _sources(directory: str, rev: str | None) -> dict[str, str]:
    """The Python files below ``directory``: in the working tree, or at git revision ``rev``."""
    if rev is None:
        return {str(p): p.read_text() for p in sorted(Path(directory).rglob("*.py"))}
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", directory],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        name: subprocess.run(
            ["git", "show", f"{rev}:{name}"], check=True, capture_output=True, text=True
        ).stdout
        for name in listed
        if name.endswith(".py")
    }


def main() -> None:
    """Print the count (and with ``--files`` each file's)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--rev", help="git revision to read instead of the working tree")
    parser.add_argument("--files", action="store_true", help="list each file's count")
    args = parser.parse_args()
    counts = {name: code_lines(text) for name, text in _sources(args.directory, args.rev).items()}
    if args.files:
        for name, count in sorted(counts.items(), key=lambda item: item[1]):
            print(f"{count:6d} {name}")
    print(f"{sum(counts.values()):6d} lines of code in {len(counts)} files")


if __name__ == "__main__":
    main()
