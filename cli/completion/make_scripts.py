"""Write deepcluster's completion scripts for bash, zsh and fish into this folder.

    python cli/completion/make_scripts.py        # or: make completion

Each is what `deepcluster --show-completion` prints in that shell (Typer's script, which asks
`deepcluster` itself for the completions, so it stays right as commands and options change).
They are here for shells the detection does not find (`sh`, a script, a system-wide install):

    source cli/completion/deepcluster.bash                         # bash
    cp cli/completion/_deepcluster "${fpath[1]}/"                  # zsh (then compinit)
    cp cli/completion/deepcluster.fish ~/.config/fish/completions/ # fish
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {"bash": "deepcluster.bash", "zsh": "_deepcluster", "fish": "deepcluster.fish"}


def script(shell: str) -> str:
    # Typer reads a shell name after --show-completion only with its detection turned off
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "deepcluster_cli", "--show-completion", shell],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    head = (
        f"# deepcluster's {shell} completion: what `deepcluster --show-completion` prints in "
        f"{shell}.\n# Regenerate with `make completion` (cli/completion/make_scripts.py).\n"
    )
    if out.startswith("#compdef"):  # zsh reads it only as the first line
        first, rest = out.split("\n", 1)
        return f"{first}\n{head}{rest}"
    return head + out


def main() -> None:
    for shell, name in FILES.items():
        (HERE / name).write_text(script(shell))
        print(HERE / name)


if __name__ == "__main__":
    main()
