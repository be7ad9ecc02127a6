"""Make ``import mlafleet.kernels`` work from a plain checkout (no ``pip install``).

Bench scripts import this first. When ``mlafleet`` is installed nothing happens; otherwise a
``mlafleet`` namespace module is registered whose ``kernels`` (and ``worker``) sub-packages are
the repo's folders, loaded by file location. Only the standard library is used.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install(packages: tuple[str, ...] = ("kernels",)) -> None:
    """Register ``mlafleet.<name>`` for each folder in ``packages`` unless already importable."""
    try:
        import mlafleet.kernels  # noqa: F401

        return
    except ImportError:
        pass
    pkg = sys.modules.get("mlafleet")
    if pkg is None:
        pkg = types.ModuleType("mlafleet")
        pkg.__path__ = []
        sys.modules["mlafleet"] = pkg
    for name in packages:
        full = f"mlafleet.{name}"
        spec = importlib.util.spec_from_file_location(
            full, ROOT / name / "__init__.py", submodule_search_locations=[str(ROOT / name)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {ROOT / name}: is this a mlafleet checkout?")
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        setattr(pkg, name, module)


install(("kernels", "worker"))  # (common.py times with worker.timing's clock warm-up)
