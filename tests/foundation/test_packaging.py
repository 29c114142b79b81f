"""The package layout: one PEP 420 namespace `twinsearch`, a wheel that holds nothing else."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_namespace_init_files():
    for folder in ("proto", "encoder", "server", "client"):
        assert not (ROOT / folder / "twinsearch" / "__init__.py").exists(), folder


def test_wheel_holds_only_the_twinsearch_namespace(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("twinsearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"twinsearch"}, tops
    for part in ("twinsearch/v1/twinsearch_pb2.py", "twinsearch/client/convert.py",
                 "twinsearch/encoder/calibration.py", "twinsearch/server/__init__.py",
                 "twinsearch/encoder/models/omniglot.tsm"):  # the default model travels with the package
        assert part in names, part
    assert "twinsearch/__init__.py" not in names


def test_cli_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "twinsearch.client.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("train", "evaluate", "serve", "index", "verify", "identify", "info", "demo"):
        assert f"\n  {command} " in out, command
