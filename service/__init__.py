"""Tweet-sentiment HTTP service: `create_app(settings)` and `Settings`; the in-process API:
`load(name_or_folder).predict(texts)` (service/api.py).

`create_app` and `load` are imported lazily so that `python -m service` can prepare the
environment (Prometheus multiprocess mode) before any metrics code is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.settings import Settings

if TYPE_CHECKING:
    from service.api import load
    from service.app import create_app

__all__ = ["Settings", "create_app", "load"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.app import create_app

        return create_app
    if name == "load":
        from service.api import load

        return load
    raise AttributeError(f"module 'service' has no attribute {name!r}")
