"""Decoding on a torch device: bit-identical to the CPU decoder.

Without a GPU the Triton kernel runs in triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, in a subprocess so the setting reaches triton before it is
imported); with one, ``permcodec.load(..., device="cuda")`` is checked directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

import permcodec

CHECK = textwrap.dedent(
    """
    import numpy as np, torch
    from permcodec.core.initializers import InitSpec, initial_rows
    from permcodec.core.plan import Plan
    from permcodec.format.container import section_digest
    from permcodec.format.entry import parse_entry
    from permcodec.format.writer import encode_entry
    from permcodec.torch import device_decode, to_numpy

    cases = [
        (InitSpec("he_uniform"), (6, 20), "float32"),
        (InitSpec("he_normal", density=0.3), (5, 16), "float32"),
        (InitSpec("he_uniform"), (4, 3, 2, 2), "bfloat16"),
        (InitSpec("he_uniform"), (3, 9), "float16"),
        (InitSpec("constant", value=0.1, random_sign=True), (3, 10), "float64"),
    ]
    cpu = torch.device("cpu")
    for i, (spec, shape, dtype) in enumerate(cases):
        plan = Plan(i)
        tp = plan.add("w", spec, shape)
        init = initial_rows(tp.spec, tp.key, shape, dtype)
        rng = np.random.default_rng(i)
        order = np.argsort(rng.random(init.shape), axis=1)
        trained = np.take_along_axis(init, order, axis=1).reshape(shape)
        fields, payload = encode_entry("w", trained, dtype, tp)
        entry = parse_entry({**fields, "offset": 0, "length": len(payload)})
        assert entry.coding == "row-rans" and device_decode.usable(entry, cpu)
        got = device_decode.decode(entry, payload, cpu)
        assert to_numpy(got)[0].tobytes() == trained.tobytes(), (spec, dtype)
        bad = bytearray(payload)
        bad[0] ^= 1  # lowest bit of lane 0's state
        fields["payload_digest"] = section_digest(bytes(bad))
        entry = parse_entry({**fields, "offset": 0, "length": len(bad)})
        try:
            device_decode.decode(entry, bytes(bad), cpu)
        except permcodec.IntegrityError:
            pass
        else:
            raise AssertionError("a damaged stream decoded")
    print("ok")
    """
)


@pytest.mark.slow
def test_device_pipeline_matches_cpu_in_the_triton_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run(
        [sys.executable, "-c", "import permcodec\n" + CHECK],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_load_is_bit_identical_to_cpu(tmp_path):
    pytest.importorskip("triton")
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    permcodec.init(model, 5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            w = layer.weight
            w.copy_(torch.gather(w, 1, torch.argsort(torch.rand(w.shape, generator=g), 1)))
    permcodec.save(model, tmp_path / "m.perm")
    cpu = permcodec.load(tmp_path / "m.perm")
    gpu = permcodec.load(tmp_path / "m.perm", device="cuda")
    for name, t in cpu.items():
        assert gpu[name].device.type == "cuda"
        assert np.array_equal(gpu[name].cpu().numpy().view(np.uint8), t.numpy().view(np.uint8))
