"""The end-to-end tests share the client tests' fixtures (tiny model, real server on a free port)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "twinsearch_client_lib_fixtures", Path(__file__).parent.parent / "client_lib" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)

tiny_model = _fixtures.tiny_model
png = _fixtures.png
server = _fixtures.server
