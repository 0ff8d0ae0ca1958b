"""Which files of the project travel to the box: git's view, minus the fixed excludes
(``ALWAYS_EXCLUDED``), ``.launcherignore`` and the caller's patterns, matched gitignore-like.

rsync applies the same patterns itself (ssh_commands.rsync_argv); this is the SFTP fallback's view.
"""
from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path
from typing import Sequence

from launcher.box.ssh_commands import ALWAYS_EXCLUDED

LAUNCHERIGNORE = ".launcherignore"


def read_launcherignore(project_root: Path) -> list[str]:
    path = Path(project_root) / LAUNCHERIGNORE
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def matches(rel: str, pattern: str) -> bool:
    """gitignore-like: ``/x`` anchored at the root, ``x/`` only folders, globs per path part."""
    folder = pattern.endswith("/")
    pat = pattern.strip("/")
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    if folder:
        prefixes = prefixes[:-1]  # a folder pattern never matches the file itself
    if pattern.startswith("/") or "/" in pat:
        return any(fnmatch.fnmatchcase(p, pat) for p in prefixes)
    names = parts[:-1] if folder else parts
    return any(fnmatch.fnmatchcase(name, pat) for name in names)


def local_files(root: Path, patterns: Sequence[str]) -> list[str]:
    """Files to sync: git's view (tracked + untracked, not ignored) when a git tree, else a walk;
    minus the fixed excludes, .launcherignore and ``patterns``."""
    root = Path(root)
    rels: list[str]
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                             capture_output=True, check=True, timeout=60).stdout
        rels = [r for r in out.decode().split("\0") if r]
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        rels = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    all_patterns = [*ALWAYS_EXCLUDED, *patterns]
    return sorted(r for r in rels if (root / r).is_file() and not any(matches(r, p) for p in all_patterns))
