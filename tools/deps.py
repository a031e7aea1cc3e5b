"""Print the project's dependencies from pyproject.toml, one per line, for `make` to install.

`python tools/deps.py` gives the runtime ones; `python tools/deps.py dev` adds the dev extras.
torch is left out: the Makefile installs the pinned build (TORCH_SPEC) in the same pip call.
`python tools/deps.py no-deps` gives [tool.sdgraph] no-deps instead: packages the Makefile installs
with `pip install --no-deps` in a second call (spandrel, whose declared torchvision we do not want).
"""

import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
if sys.argv[1:] == ["no-deps"]:
    print("\n".join(pyproject["tool"]["sdgraph"]["no-deps"]))
    sys.exit(0)
project = pyproject["project"]
deps = list(project["dependencies"])
for extra in sys.argv[1:]:
    deps += project["optional-dependencies"][extra]
print("\n".join(d for d in deps if not d.replace(" ", "").startswith("torch") or d.startswith("torchsde")))
