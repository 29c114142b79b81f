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


def test_readme_signature_code_runs(tmp_path, monkeypatch, capsys):
    """The Signatures section's client code, against a server holding the shipped signature model."""
    import numpy as np
    from PIL import Image

    from twinsearch.server.app import ServerSettings, start_server

    section = README.read_text().split("## Signatures", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert 'Client("localhost:50052")' in code
    rng = np.random.default_rng(0)
    for i in range(1, 6):  # five references, each the same strokes a little moved; the probe is the first
        img = np.full((80, 200), 245, dtype=np.uint8)
        for r0, r1, c0, c1 in [(20, 60, 10, 90), (60, 25, 90, 150), (25, 55, 150, 190)]:
            rr = np.linspace(r0, r1, 120).astype(int) + int(rng.integers(-1, 2))
            cc = np.linspace(c0, c1, 120).astype(int) + int(rng.integers(-1, 2))
            img[rr, cc] = 30
        (tmp_path / "refs" / "049").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "refs" / "049" / f"{i}.png")
    (tmp_path / "questioned.png").write_bytes((tmp_path / "refs" / "049" / "1.png").read_bytes())
    monkeypatch.chdir(tmp_path)
    running = start_server(ServerSettings(data_dir=tmp_path / "data", model_path=Path("signatures"),
                                          address="127.0.0.1:0", token=None))
    try:
        exec(compile(code.replace("localhost:50052", f"127.0.0.1:{running.port}"), str(README), "exec"), {})
    finally:
        running.stop(grace=5.0)
    same, distance, threshold, source = capsys.readouterr().out.split()
    assert same == "True" and float(distance) < 1e-5 and source == "model_eer"  # the probe is a reference
    assert float(threshold) > 0


def test_readme_several_models_code_runs(tmp_path, monkeypatch, capsys):
    """The 'Several models in one server' client code, against a server holding both shipped models."""
    import numpy as np
    from PIL import Image

    from twinsearch.server.app import ServerSettings, start_server

    section = README.read_text().split("## Several models in one server", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert 'Client("localhost:50051")' in code
    Image.fromarray(np.full((60, 120), 250, dtype=np.uint8)).save(tmp_path / "a.png")
    monkeypatch.chdir(tmp_path)
    running = start_server(ServerSettings(data_dir=tmp_path / "data", address="127.0.0.1:0",
                                          models=(("characters", Path("omniglot")), ("signatures", Path("signatures")))))
    try:
        exec(compile(code.replace("localhost:50051", f"127.0.0.1:{running.port}"), str(README), "exec"), {})
        dim = running.engine.model_info("signatures").dim
    finally:
        running.stop(grace=5.0)
    out = capsys.readouterr().out.splitlines()
    assert out == ["['characters', 'signatures']", "signatures", f"({dim},)"]
