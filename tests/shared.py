"""Where the shared test fixtures live (../shared/fixtures beside the checkout, as the project lays
it out). SDGRAPH_FIXTURES overrides it, for a checkout somewhere else; /work/shared/fixtures is the
last resort, for a clone made outside the project folder (CI clones may be)."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def find_fixtures() -> Path:
    candidates = [os.environ.get("SDGRAPH_FIXTURES"), REPO.parent / "shared" / "fixtures", "/work/shared/fixtures"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    return REPO.parent / "shared" / "fixtures"  # missing: the tests that need it say so


FIXTURES = find_fixtures()
