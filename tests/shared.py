"""Where the shared test fixtures live: ../shared/fixtures beside the checkout, as the project lays it
out. SDGRAPH_FIXTURES overrides it, for a checkout somewhere else (a CI clone, a second worktree)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def find_fixtures() -> Path:
    override = os.environ.get("SDGRAPH_FIXTURES")
    if override:
        return Path(override)  # used even if missing: the tests that need it then say where they looked
    return REPO.parent / "shared" / "fixtures"


FIXTURES = find_fixtures()


def fixture_script(relative: str):
    """Import one of the shared fixtures' build scripts (make_random_ckpt.py,
    comfy_ref_nodes/make_aux_models.py) as a module, once per session."""
    import importlib.util
    import sys

    path = FIXTURES / relative
    if not path.is_file():
        raise FileNotFoundError(f"shared fixtures not found: {path}")
    name = path.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
