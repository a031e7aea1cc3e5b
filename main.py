"""sdgraph — Stable Diffusion as a node graph.

    python main.py [WORKFLOW]            open the editor (optionally with a workflow)
    python main.py run WORKFLOW [...]    run a workflow headless
    python main.py batch WORKFLOW TABLE  run a workflow once per row of a table
    python main.py validate WORKFLOW     list every problem in a workflow
    python main.py nodes [--json]        list the node types
"""

from __future__ import annotations

import sys

COMMANDS = {"run", "batch", "validate", "nodes", "convert"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import cli  # builds the environment, once, for the commands and the editor alike

    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        return cli.main(argv)
    return cli.open_editor(argv)


if __name__ == "__main__":
    sys.exit(main())
