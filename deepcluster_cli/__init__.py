"""deepcluster: deep clustering from the command line.

``from deepcluster_cli import DeepClusterer`` gives the scikit-learn estimator; it is imported
lazily so that ``import deepcluster_cli`` (and ``deepcluster --help``) stays fast and torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DeepClusterer", "__version__"]

if TYPE_CHECKING:
    from deepcluster_cli.api import DeepClusterer


def __getattr__(name: str) -> Any:
    if name == "DeepClusterer":
        from deepcluster_cli.api import DeepClusterer

        return DeepClusterer
    raise AttributeError(f"module 'deepcluster_cli' has no attribute {name!r}")
