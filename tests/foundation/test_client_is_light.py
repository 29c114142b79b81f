"""A calling service installs the client without torch or faiss: importing it must not need them."""

import subprocess
import sys

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
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
