"""Where the repository is, for tests and the harness."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def box_requirements():
    """infra/box_requirements.py as a module (infra/ is not a package): the one reader of the
    box's requirements and the supported Python/torch range."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("box_requirements", REPO / "infra" / "box_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
