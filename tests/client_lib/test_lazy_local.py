"""`twinsearch.client.LocalClient` is imported only when asked for: the client never imports the server."""

import subprocess
import sys

CODE = """
import sys
import twinsearch.client
from twinsearch.client import Client
assert not any(m.startswith('twinsearch.server') for m in sys.modules), 'server imported by the client'
from twinsearch.client import LocalClient
assert LocalClient.__module__ == 'twinsearch.server.local_client'
assert issubclass(LocalClient, twinsearch.client.base.BaseClient) and issubclass(Client, twinsearch.client.base.BaseClient)
print('ok')
"""


def test_local_client_is_lazy():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_same_public_methods():
    from twinsearch.client import Client, LocalClient

    public = {n for n in dir(Client) if not n.startswith("_")} - {"address", "timeout", "retries"}
    assert public == {n for n in dir(LocalClient) if not n.startswith("_")}
    expected = {"info", "create_gallery", "enroll", "enroll_folder", "identify", "verify", "verify_class", "search",
                "embed", "delete", "classes", "class_page", "delete_gallery", "galleries", "get_gallery", "close"}
    assert expected <= public
