"""Ray is an extra: the client and the default server never import it, and a command that needs it
says which extra to install, in one line."""

import subprocess
import sys

from tests.foundation.test_client_is_light import ENV

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked: ' + name, name=name.split('.')[0])
        return None
sys.meta_path.insert(0, Block())
"""

CLIENT = BLOCK.format(blocked=("ray", "pyarrow", "torch", "faiss")) + """
import twinsearch.client, twinsearch.client.cli, twinsearch.client.commands.index
import twinsearch.client.vector_files, twinsearch.client.vector_bulk
print('ok')
"""

DEFAULT_SERVER = BLOCK.format(blocked=("ray", "pyarrow")) + """
import tempfile
from twinsearch.server.app import start_server
from twinsearch.server.settings import ServerSettings
running = start_server(ServerSettings(data_dir=tempfile.mkdtemp(), address="127.0.0.1:0"))
running.stop(0.5)
assert 'ray' not in sys.modules
print('ok')
"""

COMMAND = BLOCK.format(blocked=("ray", "pyarrow")) + """
from twinsearch.client.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(code: str, *argv: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=ENV,
                          timeout=120, cwd=cwd)


def test_client_and_default_server_do_not_import_ray():
    for code in (CLIENT, DEFAULT_SERVER):
        out = run(code)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("ok")


def test_commands_without_the_ray_extra_say_what_to_install(tmp_path):
    embed = run(COMMAND, "embed", "photos", "--out", "vectors", cwd=tmp_path)
    assert embed.returncode == 1 and "Traceback" not in embed.stderr
    assert "twinsearch embed: this command needs ray and pyarrow" in embed.stderr
    assert "pip install 'twinsearch[ray]'" in embed.stderr

    index = run(COMMAND, "index", "--vectors", str(tmp_path), "--gallery", "g", "--address", "127.0.0.1:9",
                cwd=tmp_path)
    assert index.returncode == 1 and "Traceback" not in index.stderr
    assert "needs pyarrow" in index.stderr and "pip install 'twinsearch[ray]'" in index.stderr

    serve = run(COMMAND, "serve", "--data-dir", str(tmp_path / "d"), "--address", "127.0.0.1:0", "--encoders", "ray",
                cwd=tmp_path)
    assert serve.returncode == 1 and "Traceback" not in serve.stderr
    assert "pip install 'twinsearch[ray]'" in serve.stderr
