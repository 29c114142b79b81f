"""The generated modules committed next to the .proto are exactly what `make proto` produces."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
GENERATED = ("twinsearch_pb2.py", "twinsearch_pb2.pyi", "twinsearch_pb2_grpc.py")


def test_generated_stubs_match_the_proto(tmp_path):
    src = tmp_path / "proto"
    (src / "twinsearch" / "v1").mkdir(parents=True)
    shutil.copy(PROTO_DIR / "twinsearch" / "v1" / "twinsearch.proto", src / "twinsearch" / "v1")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={src}", f"--pyi_out={src}",
         f"--grpc_python_out={src}", str(src / "twinsearch" / "v1" / "twinsearch.proto")],
        check=True, cwd=tmp_path,
    )
    for name in GENERATED:
        fresh = src / "twinsearch" / "v1" / name
        committed = PROTO_DIR / "twinsearch" / "v1" / name
        assert committed.exists(), f"{name} is not committed; run `make proto`"
        assert filecmp.cmp(fresh, committed, shallow=False), f"{name} is stale; run `make proto` and commit"


def test_every_rpc_and_field_is_documented():
    """Each rpc and each message field in the .proto carries a comment (on its line or just above)."""
    lines = (PROTO_DIR / "twinsearch" / "v1" / "twinsearch.proto").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("rpc "):
            if "//" not in lines[i - 1] and "//" not in line:
                undocumented.append(s)
    assert not undocumented, f"rpcs without a comment: {undocumented}"
