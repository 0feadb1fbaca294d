"""pytest fixtures for misim: see misim_pytest.plugin and clients/python/README.md."""
from .plugin import Misim, MisimVm  # noqa: F401
