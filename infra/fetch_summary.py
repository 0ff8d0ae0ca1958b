"""Sum what an install fetched, from pip's log: ``python infra/fetch_summary.py PIP_LOG``.

Prints ``<MB> <count>``: the size of every package file pip obtained (``Downloading x (12.3 MB)``
and ``Using cached x (330 kB)`` carry it; ``Processing /path/x.whl`` is a local file, sized on
disk). infra/bootstrap.sh reports it with the time taken. No third-party imports: it runs before
anything is installed.
"""
from __future__ import annotations

import os
import re
import sys

UNITS = {"B": 1, "bytes": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
SIZED = re.compile(r"^\s*(?:Downloading|Using cached) (\S+) \(([\d.]+) (bytes|B|kB|KB|MB|GB)\)")
LOCAL = re.compile(r"^\s*Processing (/\S+\.(?:whl|tar\.gz|zip))")


def fetched(lines) -> tuple[float, list[str]]:
    """(bytes, file names) of the package files a pip install obtained."""
    total, names = 0.0, []
    for line in lines:
        if match := SIZED.match(line):
            total += float(match.group(2)) * UNITS[match.group(3)]
            names.append(match.group(1).rsplit("/", 1)[-1])
        elif (match := LOCAL.match(line)) and os.path.isfile(match.group(1)):
            total += os.path.getsize(match.group(1))
            names.append(os.path.basename(match.group(1)))
    return total, names


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as log:
        size, files = fetched(log)
    print(f"{size / 1e6:.0f} {len(files)}")
