"""A directory that shows the installed package as one tree, for import-linter.

pyproject.toml installs the card's top-level folders (converters/, wrappers/, ...) as
subpackages of `coreml_diarize` through setuptools' `package-dir`. Static import analysers
(grimp, hence import-linter) find a package's modules by walking its directory, where those
subpackages are not. This writes a copy of the sources laid out as the installed package is
(copies, not links: grimp resolves a link back to the real folder), and prints its root for
PYTHONPATH:

    PYTHONPATH=$(python tools/import_view.py .import-view) lint-imports
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Dotted package name -> its source folder, from [tool.setuptools] package-dir."""
    config = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def write_view(target: Path) -> Path:
    """Copy every module of every mapped package into `target/<dotted path>`."""
    if target.exists():
        shutil.rmtree(target)
    for name, folder in sorted(package_dirs(ROOT / "pyproject.toml").items()):
        dest = target.joinpath(*name.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for module in folder.glob("*.py"):
            shutil.copy2(module, dest / module.name)
    return target


if __name__ == "__main__":
    print(write_view(Path(sys.argv[1]).resolve()))
