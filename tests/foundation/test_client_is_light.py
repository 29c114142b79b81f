"""A calling service installs the client without torch or faiss: importing it must not need them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# This checkout's code, also where an installed copy points elsewhere.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in ("proto", "encoder", "server", "client")))

BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'faiss'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
import twinsearch.client, twinsearch.client.convert, twinsearch.client.types, twinsearch.client.errors
import twinsearch.client.cli
from twinsearch.client import Client, TwinsearchError, Identification
import twinsearch.client.bulk, twinsearch.client.montage, twinsearch.client.remote, twinsearch.client.server_process
for name in ('index', 'verify', 'identify', 'galleries', 'info', 'demo'):
    __import__('twinsearch.client.commands.' + name)
Client('localhost:1').close()
from twinsearch.client import *
from twinsearch.v1 import twinsearch_pb2, twinsearch_pb2_grpc
assert 'torch' not in sys.modules and 'faiss' not in sys.modules
print('ok')
"""


def test_client_imports_without_torch_or_faiss():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


SERVER_COMMAND = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'faiss'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
from twinsearch.client.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv", [
    ["serve", "--data-dir", "unused"],
    ["train", "--data", "unused", "--out", "unused.tsm", "--steps", "1"],
    ["evaluate", "--data", "unused"],
    ["demo"],
], ids=lambda a: a[0])
def test_server_commands_on_a_client_only_install_say_what_to_install(argv, tmp_path):
    out = subprocess.run([sys.executable, "-c", SERVER_COMMAND, *argv], capture_output=True, text=True,
                         cwd=tmp_path, env=ENV, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert f"twinsearch {argv[0]}: this command needs torch" in out.stderr
    assert "pip install 'twinsearch[server]'" in out.stderr
