"""`twinsearch train` with an input size too large for the memory ends in one line that says what did not
fit and which flags make it smaller, not in torch's traceback, and writes no model file: in a training
step, in validation, and after training (calibration and evaluation, the ONNX export). The allocation
failure is provoked by raising the error torch's CPU allocator raises, without using the memory."""

from __future__ import annotations

import pytest
import torch

from twinsearch.client.cli import main
from twinsearch.encoder.heads import EmbeddingNet
from twinsearch.encoder.training import recipe
from twinsearch.encoder.training.trainer import Trainer, is_out_of_memory

TINY = ["--class-depth", "2", "--invert", "--size", "16", "--widths", "8", "16", "--pool", "avg", "--dim", "8",
        "-P", "4", "-K", "3", "--threads", "1", "--no-progress"]
# The message of the RuntimeError torch raises on CPU when an allocation cannot be satisfied.
CPU_ALLOCATOR_ERROR = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 65536000000 bytes. Error code 12 (Cannot allocate memory)")


def fail_training_forward(monkeypatch, message: str) -> None:
    """Make the network's forward pass in a training step (training mode, gradients on) raise
    RuntimeError(message); evaluation passes run as usual."""
    real = EmbeddingNet.forward

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            raise RuntimeError(message)
        return real(self, x)

    monkeypatch.setattr(EmbeddingNet, "forward", forward)


def test_a_training_step_out_of_memory_is_one_line_naming_the_size_and_the_flags(glyph_tree, tmp_path, capsys,
                                                                                 monkeypatch):
    fail_training_forward(monkeypatch, CPU_ALLOCATOR_ERROR)
    out = tmp_path / "m.tsm"
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", "--val-every", "0", *TINY,
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip() == (
        "twinsearch train: out of memory: training step 1, a batch of 12 images at 16 x 16, needs more than fits "
        "in memory; use a smaller --size, or fewer images a batch (-P/--classes-per-batch, "
        f"-K/--images-per-class). No model written to {out}")
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_validation_out_of_memory_names_its_own_batch(glyph_tree, tmp_path, capsys, monkeypatch):
    def embed(self, net, images, batch=512):
        raise RuntimeError(CPU_ALLOCATOR_ERROR)

    monkeypatch.setattr(Trainer, "_embed", embed)
    out = tmp_path / "m.tsm"
    status = main(["train", "--data", str(glyph_tree), "--steps", "2", "--val-every", "1", *TINY,
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert line.startswith("twinsearch train: out of memory: validation after step 1 embeds ") and \
        "images at 16 x 16 at a time" in line and "use a smaller --size, or a --val-max-images below" in line
    assert not out.exists()


def test_other_runtime_errors_of_a_training_step_are_not_taken_for_memory(glyph_tree, tmp_path, monkeypatch):
    fail_training_forward(monkeypatch, "mat1 and mat2 shapes cannot be multiplied (12x64 and 32x8)")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as raised:
        main(["train", "--data", str(glyph_tree), "--steps", "2", "--val-every", "0", *TINY,
              "--out", str(tmp_path / "m.tsm")])
    assert not isinstance(raised.value, MemoryError)


def test_out_of_memory_is_told_apart_from_other_errors():
    assert is_out_of_memory(RuntimeError(CPU_ALLOCATOR_ERROR))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float but found Double"))
    assert not is_out_of_memory(ValueError("DefaultCPUAllocator: can't allocate memory"))  # not torch's kind


def test_calibration_or_the_graph_out_of_memory_after_training_is_one_line_too(glyph_tree, tmp_path, capsys,
                                                                                monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError(CPU_ALLOCATOR_ERROR)

    out = tmp_path / "m.tsm"
    args = ["train", "--data", str(glyph_tree), "--steps", "2", "--val-every", "0", *TINY, "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(recipe, "_calibrate_and_evaluate", out_of_memory)
        status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("twinsearch train: out of memory after training, while calibrating and evaluating the "
                          "model at 16 x 16 (a smaller --size needs less); the trained weights are kept in the "
                          f"checkpoint {out}.ckpt. No model written to {out}")
    assert not out.exists()

    monkeypatch.setattr("twinsearch.encoder.model.graph_bytes", out_of_memory)
    status = main(args)
    err = capsys.readouterr().err.strip()
    assert status == 2 and "Traceback" not in err, err
    assert err.endswith("twinsearch train: out of memory writing the model at 16 x 16 with its ONNX graph; "
                        f"--no-graph writes it without. No model written to {out}")
    assert not out.exists()
    assert main([*args, "--no-graph"]) == 0 and out.exists()
