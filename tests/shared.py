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
