"""The torch API: init, save/load, checkpoints, and torch-side generation."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import permcodec
from permcodec import InitSpec, Plan
from permcodec.core import philox
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.initializers import resolve
from permcodec.torch import generate_torch

FLOAT_TORCH = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))


def convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 4, 3, bias=False),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5),
    )


MODELS = {"mlp": mlp, "convnet": convnet}
WEIGHTS = {"mlp": ["0.weight", "2.weight"], "convnet": ["0.weight", "3.weight", "5.weight"]}


def _randomize_non_weights(model: nn.Module) -> None:
    """Give biases, BN parameters and buffers distinctive values."""
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("weight") or "1." in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype))
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(torch.rand(b.shape, generator=gen).to(b.dtype) + 0.5)
            else:
                b.fill_(7)


def _rows(p: torch.Tensor) -> torch.Tensor:
    return p.reshape(p.shape[0], -1) if p.dim() > 1 else p.reshape(1, -1)


def _state_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- init


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_init_deterministic_and_seed_dependent(kind):
    a, b, c = MODELS[kind](), MODELS[kind](), MODELS[kind]()
    torch.manual_seed(1)
    plan_a = permcodec.init(a, 123)
    torch.manual_seed(2)  # the torch RNG plays no part
    plan_b = permcodec.init(b, 123)
    permcodec.init(c, 124)
    assert list(plan_a.tensors) == WEIGHTS[kind]
    assert plan_a == plan_b
    assert plan_a.seed == 123
    for name in WEIGHTS[kind]:
        pa, pb, pc = (dict(m.named_parameters())[name] for m in (a, b, c))
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name
        # the values are the numpy-side initial values of the plan
        tp = plan_a.tensors[name]
        ref = init_rows(tp.spec, tp.key, tuple(pa.shape), "float32").reshape(pa.shape)
        assert np.array_equal(pa.detach().numpy().view(np.uint32), ref.view(np.uint32)), name
        # he_uniform: within sqrt(6 / fan_in)
        fan_in = _rows(pa).shape[1]
        assert pa.abs().max() <= math.sqrt(6.0 / fan_in) + 1e-6


def test_init_leaves_biases_and_batchnorm_untouched():
    model = convnet()
    _randomize_non_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = permcodec.init(model, 5)
    assert model.permcodec_plan is plan
    after = model.state_dict()
    for k in before:
        if k in plan.tensors:
            assert not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    assert set(plan.tensors) == {"0.weight", "3.weight", "5.weight"}


def test_init_biases_true_includes_biases():
    model = convnet()
    _randomize_non_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = permcodec.init(model, 5, biases=True)
    assert set(plan.tensors) == {"0.weight", "0.bias", "3.weight", "5.weight", "5.bias"}
    after = model.state_dict()
    for k in ("0.bias", "5.bias"):
        assert not torch.equal(before[k], after[k])
    # torch's default bias range from the weight's fan_in
    assert after["0.bias"].abs().max() <= 1 / math.sqrt(27) + 1e-7
    assert after["5.bias"].abs().max() <= 1 / math.sqrt(64) + 1e-7
    for k in ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(before[k], after[k]), k


def test_init_overrides():
    model = convnet()
    _randomize_non_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = permcodec.init(
        model,
        5,
        overrides={
            "3.weight": None,
            "5.weight": "binary",
            "1.weight": InitSpec("constant", value=2.0),
        },
    )
    assert "3.weight" not in plan.tensors
    after = model.state_dict()
    assert torch.equal(after["3.weight"], before["3.weight"])
    assert set(after["5.weight"].unique().tolist()) == {-1.0, 1.0}
    assert plan.tensors["5.weight"].spec["kind"] == "two_value"
    assert (after["1.weight"] == 2.0).all() and "1.weight" in plan.tensors
    with pytest.raises(permcodec.PlanError, match="nonexistent"):
        permcodec.init(convnet(), 5, overrides={"nonexistent.weight": None})


def test_init_scheme_callable_and_granularity():
    model = mlp()
    seen = []

    def scheme(name, p):
        seen.append((name, tuple(p.shape)))
        return None if name == "2.weight" else InitSpec("normal", std=0.1)

    plan = permcodec.init(model, 3, scheme)
    assert seen == [("0.weight", (16, 20)), ("2.weight", (4, 16))]
    assert list(plan.tensors) == ["0.weight"]
    plan = permcodec.init(mlp(), 3, "glorot_normal", granularity="tensor")
    assert {tp.spec["granularity"] for tp in plan.tensors.values()} == {"tensor"}
    with pytest.raises(permcodec.PlanError):
        permcodec.init(mlp(), 1.5)


@pytest.mark.parametrize("kind", ["mlp", "convnet"])
@pytest.mark.parametrize("density", [0.3, 0.55])
def test_init_density_exact_row_counts(kind, density):
    model = MODELS[kind]()
    plan = permcodec.init(model, 9, density=density, biases=True)
    params = dict(model.named_parameters())
    for name, tp in plan.tensors.items():
        assert tp.spec["density"] == density
        rows = _rows(params[name].detach())
        k = math.floor(density * rows.shape[1] + 0.5)
        assert (rows != 0).sum(dim=1).tolist() == [k] * rows.shape[0], name


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", list(FLOAT_TORCH))
@pytest.mark.parametrize("kind", ["mlp", "convnet"])
def test_checkpoint_and_perm_round_trip(tmp_path, kind, dtype, permute_model_rows):
    model = MODELS[kind]().to(FLOAT_TORCH[dtype])
    _randomize_non_weights(model)
    plan = permcodec.init(model, 77, biases=True)
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    permute_model_rows(model, seed=4)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    moved = [k for k in plan.tensors if not torch.equal(init_state[k], original[k])]
    assert moved, "the rows were not rearranged"

    ckpt = tmp_path / "model.pt"
    permcodec.save_checkpoint(model, ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert set(raw) == {"state_dict", "permcodec"}
    sd, plan2 = permcodec.load_checkpoint(ckpt)
    _state_equal(sd, original)
    assert plan2 == plan

    path = tmp_path / "model.perm"
    permcodec.save(sd, path, plan=plan2, metadata={"run": "test"})
    out = permcodec.load(path)
    _state_equal(out, original)
    with permcodec.open(path) as pf:
        assert pf.metadata["run"] == "test"
        assert "permcodec_version" in pf.metadata
        assert {n for n in pf.keys() if pf.entry(n).coding == "row-rans"}  # noqa: SIM118 == set(plan.tensors)

    fresh = MODELS[kind]().to(FLOAT_TORCH[dtype])
    result = permcodec.load_model(fresh, path)
    assert not result.missing_keys and not result.unexpected_keys
    _state_equal(fresh.state_dict(), original)
    assert fresh.permcodec_plan == plan
    # training can go on: the loaded model saves again to the same bytes of tensors
    permcodec.save(fresh, tmp_path / "again.perm")
    _state_equal(permcodec.load(tmp_path / "again.perm"), original)


def test_save_from_module_uses_attached_plan_and_requires_one(tmp_path, permute_model_rows):
    model = mlp()
    permcodec.init(model, 1)
    permute_model_rows(model)
    permcodec.save(model, tmp_path / "m.perm")
    _state_equal(permcodec.load(tmp_path / "m.perm"), model.state_dict())
    with pytest.raises(permcodec.PlanError, match="plan"):
        permcodec.save(mlp(), tmp_path / "n.perm")
    assert not (tmp_path / "n.perm").exists()


def test_save_refuses_non_arrangement_torch(tmp_path, permute_model_rows):
    model = convnet()
    permcodec.init(model, 1)
    permute_model_rows(model)
    with torch.no_grad():
        model[3].weight[2, 0, 0, 0] += 0.5
    target = tmp_path / "m.perm"
    target.write_bytes(b"keep me")
    with pytest.raises(permcodec.NotAnArrangementError) as exc:
        permcodec.save(model, target)
    assert (exc.value.tensor, exc.value.row) == ("3.weight", 2)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.perm"]


@pytest.mark.parametrize("dtype", list(FLOAT_TORCH))
def test_torch_load_equals_numpy_load(tmp_path, dtype, permute_model_rows, storage_bytes):
    model = convnet().to(FLOAT_TORCH[dtype])
    _randomize_non_weights(model)
    permcodec.init(model, 31, density=0.5)
    permute_model_rows(model, seed=2)
    path = tmp_path / "m.perm"
    permcodec.save(model, path)
    t = permcodec.load(path)
    n = permcodec.load_numpy(path)
    assert list(t) == list(n)
    for k in t:
        assert storage_bytes(t[k]) == storage_bytes(n[k]), k
        assert tuple(t[k].shape) == n[k].shape, k
        assert str(t[k].dtype).removeprefix("torch.") == n[k].dtype.name, k


@pytest.mark.parametrize("dtype", list(FLOAT_TORCH))
def test_generate_torch_equals_numpy_init(spec_case, spec_of, dtype, storage_bytes):
    for granularity in ("row", "tensor"):
        for shape in [(6, 3, 3, 3), (10, 24), (9,)]:
            spec = spec_of(spec_case, density=0.4, granularity=granularity)
            tp = Plan(2**63 + 5).add("net.w", spec, shape)
            t = generate_torch(tp, shape, FLOAT_TORCH[dtype])
            a = init_rows(tp.spec, tp.key, shape, dtype).reshape(shape)
            assert t.dtype == FLOAT_TORCH[dtype] and tuple(t.shape) == shape
            assert storage_bytes(t) == a.tobytes(), (granularity, shape)


def test_fresh_normal_init_can_be_saved(tmp_path, find_adversarial_std):
    """A just-initialized model is trivially an arrangement of its initialization."""
    std = find_adversarial_std(philox.stream_key(0, "weight"), 64 * 256)
    model = nn.Linear(256, 64, bias=False)
    permcodec.init(model, 0, InitSpec("normal", std=std))
    permcodec.save(model, tmp_path / "m.perm")
    assert torch.equal(permcodec.load(tmp_path / "m.perm")["weight"], model.weight.detach())


# ---------------------------------------------------------------- unsafe checkpoints


class _TouchFile:
    """Unpickling this object opens (creates) a file: code execution."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


class _System:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
@pytest.mark.parametrize("payload", [_TouchFile, _System])
def test_load_checkpoint_refuses_code(tmp_path, how, payload):
    target = tmp_path / "pwned"
    evil = {"state_dict": {"w": torch.zeros(2)}, "extra": payload(str(target))}
    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save(evil, path)
    elif how == "torch.save-legacy":
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as f:
            pickle.dump(evil, f)
    assert not target.exists()
    with pytest.raises(permcodec.UnsafeCheckpointError, match="weights_only"):
        permcodec.load_checkpoint(path)
    assert not target.exists()


def test_load_checkpoint_accepts_plain_state_dicts(tmp_path):
    model = mlp()
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    sd, plan = permcodec.load_checkpoint(tmp_path / "bare.pt")
    assert plan is None
    _state_equal(sd, model.state_dict())
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pt")
    sd, plan = permcodec.load_checkpoint(tmp_path / "wrapped.pt")
    assert plan is None
    _state_equal(sd, model.state_dict())
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(permcodec.PermcodecError):
        permcodec.load_checkpoint(tmp_path / "junk.pt")


# ---------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_generation_and_load_match_cpu(tmp_path, spec_cases, spec_of, storage_bytes):
    for case in spec_cases:
        for dtype, tdt in FLOAT_TORCH.items():
            for density in (1.0, 0.3):
                shape = (12, 5, 3, 3)
                tp = Plan(4).add("w", spec_of(case, density=density), shape)
                t = generate_torch(tp, shape, tdt, device="cuda")
                assert t.device.type == "cuda"
                a = init_rows(tp.spec, tp.key, shape, dtype).reshape(shape)
                assert storage_bytes(t) == a.tobytes(), (case[0], dtype, density)
    model = convnet()
    permcodec.init(model, 8, biases=True)
    path = tmp_path / "m.perm"
    permcodec.save(model, path)
    cpu = permcodec.load(path)
    gpu = permcodec.load(path, device="cuda")
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        assert torch.equal(gpu[k].cpu(), cpu[k]), k


def test_min_row_leaves_short_rowed_layers_unseeded() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5), torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 10)
    )
    before = model[0].weight.detach().clone()
    plan = permcodec.init(model, 0, min_row=32)
    assert set(plan.tensors) == {"2.weight"}  # conv rows hold 25 values, linear 96
    assert torch.equal(model[0].weight, before)
    plan = permcodec.init(model, 0, min_row=32, overrides={"0.weight": "he_uniform"})
    assert set(plan.tensors) == {"0.weight", "2.weight"}  # an override always seeds


def test_loading_into_a_torchscript_module_or_a_wrong_shape(tmp_path):
    model = mlp()
    permcodec.init(model, 2)
    permcodec.save(model, tmp_path / "m.perm")
    scripted = torch.jit.script(mlp())
    permcodec.load(tmp_path / "m.perm", model=scripted)  # no plan recorded, no error
    _state_equal(scripted.state_dict(), model.state_dict())
    wrong = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(permcodec.PermcodecError, match=r"'0.weight' has shape \[16, 20\]"):
        permcodec.load(tmp_path / "m.perm", model=wrong)


def test_loading_into_a_model_of_other_tensors_names_them_in_one_error(tmp_path):
    model = mlp()
    permcodec.init(model, 2)
    permcodec.save(model, tmp_path / "m.perm")
    other = nn.Sequential(nn.Linear(20, 16), nn.ReLU())
    for target in (other, torch.jit.script(other)):
        with pytest.raises(permcodec.PermcodecError) as err:
            permcodec.load(tmp_path / "m.perm", model=target)
        message = str(err.value)
        assert "\n" not in message
        assert "in the file only (2.bias, 2.weight)" in message
        assert "strict=False" in message
    permcodec.load(tmp_path / "m.perm", model=other, strict=False)  # what both hold
    assert torch.equal(other[0].weight, model[0].weight)


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.0, "7"])
def test_a_seed_outside_the_generators_range_is_a_plan_error(seed):
    with pytest.raises(permcodec.PlanError, match="seed must be an integer"):
        permcodec.init(mlp(), seed)


def test_the_default_scheme_fits_the_kind_of_model():
    """A model with attention layers is seeded Glorot-uniform when no scheme is named
    (He's variance trains post-norm transformers worse); MLPs and convnets He-uniform;
    a scheme named is used as named."""
    from torch import nn

    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    kinds = {t.spec["kind"] for t in permcodec.init(layer, 0).tensors.values()}
    assert kinds == {"xavier_uniform"}
    convnet = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 4))
    kinds = {t.spec["kind"] for t in permcodec.init(convnet, 0).tensors.values()}
    assert kinds == {"kaiming_uniform"}
    named = permcodec.init(layer, 0, "he_uniform").tensors.values()
    assert {t.spec["kind"] for t in named} == {"kaiming_uniform"}
    from permcodec.torch import default_scheme

    assert default_scheme(layer) == "glorot_uniform" and default_scheme(convnet) == "he_uniform"


class _TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(32, 50, bias=False)  # first: the tied table's name
        self.tokens = nn.Embedding(50, 32)
        self.head.weight = self.tokens.weight
        self.block = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)


@pytest.mark.parametrize("attention", [True, False])
def test_embedding_tables_get_torchs_own_init_by_default(attention):
    """With no scheme named an embedding table is seeded N(0, 1), torch's own init for
    it (Glorot's small values train a post-norm transformer 4% worse), tied to a head
    or not; the other matrices keep the model kind's scheme; a scheme named covers the
    tables too."""
    model = _TiedLM() if attention else nn.Sequential(nn.EmbeddingBag(50, 32), nn.Linear(32, 40))
    specs = {n: t.spec for n, t in permcodec.init(model, 3).tensors.items()}
    table = "head.weight" if attention else "0.weight"
    assert specs.pop(table) == resolve(permcodec.torch.EMBEDDING_SCHEME, (50, 32))
    assert specs and {s["kind"] for s in specs.values()} == {
        "xavier_uniform" if attention else "kaiming_uniform"
    }
    w = dict(model.named_parameters())[table].detach()
    assert 0.9 < float(w.std()) < 1.1
    named = permcodec.init(model, 3, "glorot_uniform").tensors[table].spec
    assert named["kind"] == "xavier_uniform"
