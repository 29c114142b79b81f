"""The README's client usage code runs, as written, against a real server on a free port."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _client_code() -> str:
    text = README.read_text()
    section = text.split("## Using the client", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the README's 'Using the client' section has no python block"
    return blocks[0]


def test_readme_client_code_runs(server, png, tmp_path, monkeypatch, capsys):
    code = _client_code()
    assert 'Client("localhost:50051"' in code
    for name, seed in [("photos/alice/1.png", 1), ("photos/alice/2.png", 2), ("photos/bob/1.png", 3),
                       ("probe.png", 1), ("a.png", 4), ("b.png", 5)]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png(seed))
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("localhost:50051", server.address), str(README), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tiny-test"
    assert out[1] == "(1, 2)"
    assert out[2] == "1 2 0"                      # bob stored; alice's two files skipped
    assert out[3].startswith("alice ")            # the probe is alice's first image
    assert out[-1].startswith("NOT_FOUND ")
