"""An offline English corpus built at run time: the docstrings and comments of the installed
Python standard library.

Every machine with Python has it, so smoke runs and a newcomer's first run need no download,
and nothing copied from elsewhere lives in the repository. One document per source file (its
docstrings and comment blocks, in file order); files are visited in sorted path order so the
corpus is the same on every run of the same Python version. The extraction runs once per
machine and is cached under ~/.cache/llm-box (or $LLMBOX_CACHE_DIR).
"""
from __future__ import annotations

import ast
import hashlib
import json
import multiprocessing
import os
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Iterator

from runcontract.atomic import atomic_write_text

# Third-party packages are not the standard library (and differ between machines).
_SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_EXTRACTOR_VERSION = 1  # bump when file_document changes, so old caches are not reused


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The standard library's ``.py`` files in a deterministic (sorted relative path) order."""
    root = root or stdlib_dir()
    files = [p for p in root.rglob("*.py") if not _SKIPPED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and node.body:
                found.append((node.body[0].lineno, doc))
    return found


def _string_lines(tree: ast.AST) -> set[int]:
    """Lines inside multi-line string literals, where a leading ``#`` is not a comment."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.end_lineno and node.end_lineno > node.lineno:
            lines.update(range(node.lineno + 1, node.end_lineno + 1))
    return lines


def _comment_blocks(source: str, string_lines: set[int]) -> list[tuple[int, str]]:
    """Consecutive whole-line ``#`` comments joined into one paragraph each.

    A line scan instead of ``tokenize``: several times faster, and whole-line comments are
    where the prose is. Shebangs, coding lines and pragmas are dropped.
    """
    blocks: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.lstrip()
        if stripped.startswith("#") and number not in string_lines:
            text = stripped.lstrip("#").strip()
            if not current:
                start = number
            if text and not text.startswith(("!", "-*-", "type:", "noqa", "pragma")):
                current.append(text)
            continue
        if current:
            blocks.append((start, "\n".join(current)))
            current = []
    if current:
        blocks.append((start, "\n".join(current)))
    return blocks


def file_document(path: Path) -> str:
    """Docstrings and comment blocks of one file, in line order, separated by blank lines."""
    try:
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in old test files
            tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""  # a few test files are deliberately invalid: skip them
    parts = sorted(_docstrings(tree) + _comment_blocks(source, _string_lines(tree)), key=lambda item: item[0])
    text = "\n\n".join(text for _, text in parts)
    # a few test docstrings hold lone surrogates, which UTF-8 (and SentencePiece) refuse
    return text.encode("utf-8", "replace").decode("utf-8")


def _cache_path(files: list[Path], root: Path) -> Path:
    """A cache file named by a hash of the Python version and every file's path, size and mtime."""
    digest = hashlib.sha256(f"{sys.version}|{root}|{_EXTRACTOR_VERSION}".encode())
    for path in files:
        st = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    base = Path(os.environ.get("LLMBOX_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm-box")
    return base / f"python_stdlib_corpus-{digest.hexdigest()[:16]}.jsonl"


def _build_cache(files: list[Path], cache: Path) -> None:
    """Extract every file once (in parallel: parsing ~1800 files takes ~10 s on one core)."""
    from trainer.corpus.progress import progress_bar

    workers = max(1, min(8, os.cpu_count() or 1))
    with multiprocessing.get_context("spawn").Pool(workers) as pool, progress_bar(len(files), "python_stdlib corpus", unit="file") as bar:
        docs = list(bar.wrap(pool.imap(file_document, files, chunksize=16)))
    atomic_write_text(cache, "".join(json.dumps(doc) + "\n" for doc in docs))


def iter_stdlib_documents(start: int = 0) -> Iterator[str]:
    """One document per stdlib file, from file index ``start`` (empty strings for files with no
    prose, so positions stay stable for resuming). Extracted once per machine into a cache
    file (rebuilt if the standard library changes), read from there afterwards."""
    root = stdlib_dir()
    files = stdlib_files(root)
    cache = _cache_path(files, root)
    if not cache.is_file():
        _build_cache(files, cache)
    with open(cache, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if index >= start:
                yield json.loads(line)
