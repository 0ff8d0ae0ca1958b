"""Where the repository is, for tests and the harness."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
