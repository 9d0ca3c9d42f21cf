"""Rank buckets and context coding: lossless rows below the bound when ranks stay near
their initial ones, lossy ``bits`` coding that is still an exact arrangement of the
init, ``LaPerm(bits=b)`` that loses nothing when saved, and format-version rules."""

from __future__ import annotations

import copy
import io
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from hostile_files import edit_entry, near_init, seal, split
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import permcodec
from permcodec import numpy as pnp
from permcodec.coding import bucket_rans, buckets, rans, runs
from permcodec.coding.arrangement import bound_bits, row_classes
from permcodec.core.dtypes import order_keys
from permcodec.core.initializers import InitSpec, row_shape
from permcodec.core.initializers import initial_rows as init_rows
from permcodec.core.plan import Plan
from permcodec.errors import FormatError, IntegrityError
from permcodec.format import container
from permcodec.format.entry import Entry, parse_entry
from permcodec.format.reader import decode_entry
from permcodec.format.writer import encode_entry

SPECS = [
    InitSpec("he_uniform"),
    InitSpec("he_normal"),
    InitSpec("he_uniform", density=0.3),
    InitSpec("constant", value=0.08, random_sign=True, density=0.6),
    InitSpec("binary"),
]


def _tensor(spec: InitSpec, shape: tuple[int, ...], seed: int = 0) -> tuple:
    plan = Plan(seed)
    tp = plan.add("w", spec, shape)
    init = init_rows(tp.spec, tp.key, shape, "float32")
    rows, m = row_shape(shape, tp.spec["granularity"])
    return tp, init.reshape(rows, m)


def _round_trip(arr: np.ndarray, tp, shape, bits=None) -> tuple[Entry, np.ndarray]:
    fields, payload = encode_entry("w", arr.reshape(shape), "float32", tp, bits)
    entry = parse_entry({**fields, "offset": 0, "length": len(payload)})
    return entry, decode_entry(entry, payload)


@settings(max_examples=40, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    rows=st.integers(1, 12),
    m=st.integers(1, 300),
    noise=st.sampled_from([0.0, 0.02, 0.1, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_lossless_round_trip_whatever_the_coding(spec, rows, m, noise, seed):
    tp, init = _tensor(spec, (rows, m), seed)
    trained = near_init(init, np.random.default_rng(seed), noise)
    entry, out = _round_trip(trained, tp, (rows, m))
    assert out.tobytes() == trained.tobytes()
    assert entry.rel_error is None


def test_context_coding_beats_the_bound_when_ranks_stay_near():
    tp, init = _tensor(InitSpec("he_uniform"), (64, 784))
    trained = near_init(init, np.random.default_rng(0), 0.05)
    entry, out = _round_trip(trained, tp, (64, 784))
    assert out.tobytes() == trained.tobytes()
    assert entry.coding == "bucket-rans" and entry.fields["exact"] is True
    assert 8 * entry.length < 0.8 * entry.fields["bound_bits"]


def test_wide_rows_are_coded_in_groups_a_decoder_holds_in_little_memory():
    """A trained layer of long rows (the classifier after a conv stack): lanes are
    capped so that a group, which a decoder holds whole, stays small, and the decode's
    working memory is the output and one group, not a multiple of the whole tensor."""
    shape = (96, 8192)
    tp, init = _tensor(InitSpec("he_uniform"), shape)
    trained = near_init(init, np.random.default_rng(0), 0.02)
    entry, out = _round_trip(trained, tp, shape)
    assert out.tobytes() == trained.tobytes()
    assert entry.coding == "bucket-rans" and entry.fields["exact"] is True
    for lanes in (entry.fields["lanes"], entry.fields["refine_lanes"]):
        assert lanes * shape[1] <= max(rans.GROUP_VALUES, shape[1])
    fields, payload = encode_entry("w", trained, "float32", tp)
    parsed = parse_entry({**fields, "offset": 0, "length": len(payload)})
    tracemalloc.start()
    try:
        decode_entry(parsed, payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    run = rans.GROUP_VALUES * runs.RUN_BYTES_PER_VALUE  # one group's working set
    assert peak < trained.nbytes + run, f"peak {peak / 2**20:.1f} MiB"


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5000), m=st.integers(1, 1 << 17), bound=st.floats(0, 1e10))
def test_lanes_keep_their_states_cheap_and_their_groups_small(rows, m, bound):
    lanes = rans.choose_lanes(rows, bound, m)
    assert 1 <= lanes <= rows
    assert lanes == 1 or lanes * m <= rans.GROUP_VALUES
    assert lanes == 1 or 64 * lanes <= rans.LANE_BUDGET * bound


@pytest.mark.parametrize("noise", [0.01, 0.05, 0.2])
def test_depth_chosen_on_a_sample_of_rows_codes_as_small_as_the_full_search(noise, monkeypatch):
    """Large tensors choose their bucket depth on rows spread over the tensor: the
    file is within 0.5% of the one the search over every row writes."""
    shape = (96, 4096)
    tp, init = _tensor(InitSpec("he_uniform"), shape)
    trained = near_init(init, np.random.default_rng(1), noise)
    assert trained.size > bucket_rans.SEARCH_VALUES
    sampled, out = _round_trip(trained, tp, shape)
    assert out.tobytes() == trained.tobytes()
    monkeypatch.setattr(bucket_rans, "SEARCH_VALUES", trained.size)
    full, _ = _round_trip(trained, tp, shape)
    assert sampled.coding == full.coding == "bucket-rans"
    assert sampled.length <= 1.005 * full.length


def test_rows_without_rank_memory_stop_the_depth_search_at_once(monkeypatch):
    tp, init = _tensor(InitSpec("he_uniform"), (64, 784))
    shuffled = near_init(init, np.random.default_rng(0), 10.0)
    depths = []
    real = buckets.bucketize
    monkeypatch.setattr(
        buckets, "bucketize", lambda rc, c, bits: depths.append(bits) or real(rc, c, bits)
    )
    entry, out = _round_trip(shuffled, tp, (64, 784))
    assert out.tobytes() == shuffled.tobytes() and entry.coding == "row-rans"
    assert depths == [bucket_rans.REFINE_BITS[0]]


def test_unrelated_ranks_keep_the_plain_coding_at_the_bound():
    tp, init = _tensor(InitSpec("he_uniform"), (64, 784))
    trained = near_init(init, np.random.default_rng(0), 10.0)
    entry, _ = _round_trip(trained, tp, (64, 784))
    assert entry.coding == "row-rans"
    assert 8 * entry.length <= 1.01 * entry.fields["bound_bits"]


def _bucket_of_values(rows: np.ndarray, init: np.ndarray, bits: int) -> np.ndarray:
    """Bucket of every value by its class's first rank in the sorted init (the spec)."""
    out = np.empty(rows.shape, dtype=np.int64)
    m = init.shape[1]
    for r in range(init.shape[0]):
        s = np.sort(init[r])
        first = np.searchsorted(s, rows[r], side="left")
        out[r] = first * (1 << bits) // m
    return out


@settings(max_examples=40, deadline=None)
@given(
    spec=st.sampled_from(SPECS),
    rows=st.integers(1, 8),
    m=st.integers(1, 300),
    bits=st.integers(1, 8),
    noise=st.sampled_from([0.02, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_lossy_buckets_keep_the_multiset_and_every_bucket(spec, rows, m, bits, noise, seed):
    tp, init = _tensor(spec, (rows, m), seed)
    trained = near_init(init, np.random.default_rng(seed), noise)
    entry, out = _round_trip(trained, tp, (rows, m), bits)
    out = out.reshape(rows, m)
    assert entry.coding == "bucket-rans" and entry.fields["bits"] == bits
    # an exact arrangement of the init ...
    assert (np.sort(out, axis=1) == np.sort(init, axis=1)).all()
    # ... in which every weight stays in the bucket it had
    assert (_bucket_of_values(out, init, bits) == _bucket_of_values(trained, init, bits)).all()
    # the bucketed form is a fixed point: coding it again loses nothing
    entry2, out2 = _round_trip(out, tp, (rows, m), bits)
    assert out2.tobytes() == out.tobytes() and entry2.rel_error == 0.0
    assert (entry.rel_error == 0.0) == (out.tobytes() == trained.tobytes())


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_lossy_size_follows_bits(bits):
    tp, init = _tensor(InitSpec("he_uniform"), (64, 784))
    unrelated = near_init(init, np.random.default_rng(0), 10.0)
    entry, _ = _round_trip(unrelated, tp, (64, 784), bits)
    assert 8 * entry.length / unrelated.size <= bits * 1.01
    assert entry.fields["weights"] is None  # no table: it would not pay
    near = near_init(init, np.random.default_rng(0), 0.02)
    entry, _ = _round_trip(near, tp, (64, 784), bits)
    assert 8 * entry.length / near.size < 0.7 * bits
    assert entry.fields["weights"] is not None


def test_rows_no_longer_than_the_buckets_are_exact():
    tp, init = _tensor(InitSpec("he_uniform"), (5, 200))
    trained = near_init(init, np.random.default_rng(1), 1.0)
    entry, out = _round_trip(trained, tp, (5, 200), 8)
    assert out.tobytes() == trained.tobytes() and entry.rel_error == 0.0


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_context_coder_inverse(data):
    rows = data.draw(st.integers(1, 6))
    k = data.draw(st.sampled_from([2, 4, 8]))
    per = data.draw(st.integers(1, 6))
    m = k * per
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    counts = np.full((rows, k), per, dtype=np.int64)
    base = np.repeat(np.arange(k), per)
    ctx = np.stack([rng.permutation(base) for _ in range(rows)])
    sym = np.stack([rng.permutation(base) for _ in range(rows)])
    top = buckets.max_weight(m)
    weights = rng.integers(1, top + 1, 2 * k - 1)
    lanes = data.draw(st.integers(1, rows))
    states, words = rans.encode_ctx(sym, ctx, counts, weights, lanes)
    assert (rans.decode_ctx(states, words, ctx, counts, weights) == sym).all()
    if words.shape[0]:
        with pytest.raises(IntegrityError):
            rans.decode_ctx(states, words[:-1], ctx, counts, weights)


def test_bucketize_never_splits_a_class():
    _, init = _tensor(InitSpec("he_uniform", density=0.3), (6, 100))
    rc = row_classes(init, order_keys(init, "float32"))
    from permcodec.coding.arrangement import classes_of

    bk = buckets.bucketize(rc, classes_of(order_keys(init, "float32"), rc), 3)
    assert (bk.counts.sum(axis=1) == 100).all()
    zero_class_bucket = [bk.class_bucket[r, np.flatnonzero(rc.values[r] == 0)[0]] for r in range(6)]
    assert all(bk.counts[r, b] >= 70 for r, b in enumerate(zero_class_bucket))
    assert bound_bits(rc.counts) > 0


# ---------------------------------------------------------------- file level


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 24), nn.ReLU(), nn.Linear(24, 5))


def _shuffled(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in (model[0].weight, model[2].weight):
            p.copy_(torch.gather(p, 1, torch.argsort(torch.rand(p.shape, generator=g), 1)))
    return model


def test_older_versions_read_and_hold_only_their_codings(tmp_path):
    model = _mlp()
    permcodec.init(model, 1)
    permcodec.save(model, tmp_path / "init.perm")  # the init itself: context-coded
    assert permcodec.open(tmp_path / "init.perm").entry("0.weight").coding == "bucket-rans"
    _shuffled(model)
    permcodec.save(model, tmp_path / "row.perm")  # row-rans
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", permcodec.LossyWarning)
        permcodec.save(model, tmp_path / "bucket.perm", bits=2)
    permcodec.numpy.save({"b": np.zeros(3, np.float32)}, tmp_path / "raw.perm", None)
    for name, lowest in (("row", 3), ("bucket", 2), ("raw", 1)):
        raw = (tmp_path / f"{name}.perm").read_bytes()
        assert permcodec.open(tmp_path / f"{name}.perm").version == container.BASE_VERSION
        header, payloads, _ = split(raw)
        assert container.version_for(header) == lowest
        for version in range(lowest, container.FORMAT_VERSION + 1):
            old = tmp_path / f"{name}.v{version}.perm"
            old.write_bytes(seal(header, payloads, version))
            with permcodec.open(old) as pf:
                assert pf.version == version
                for t in pf:
                    assert np.array_equal(
                        pf.tensor(t), permcodec.open(tmp_path / f"{name}.perm").tensor(t)
                    )
    # a version-1 file may not use a version-2 coding
    data = seal(*split((tmp_path / "bucket.perm").read_bytes())[:2], version=1)
    with pytest.raises(FormatError, match="unknown in format version 1"):
        container.read_header(io.BytesIO(data), len(data))


@pytest.mark.parametrize(
    "changes",
    [
        {"bits": 0},
        {"bits": 9},
        {"exact": 1},
        {"weights": [1, 2]},
        {"weights": [0, 1, 1]},
        {"words": 10**9},
        {"lanes": 0},
    ],
)
def test_malformed_bucket_entries_are_format_errors(tmp_path, changes):
    model = _mlp()
    permcodec.init(model, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", permcodec.LossyWarning)
        permcodec.save(model, tmp_path / "m.perm", bits=1)
    path = tmp_path / "m.perm"
    path.write_bytes(edit_entry(path.read_bytes(), "0.weight", **changes))
    with pytest.raises(FormatError):
        permcodec.open(tmp_path / "m.perm").tensor("0.weight")


def test_save_with_bits_warns_with_the_error(tmp_path):
    model = _mlp()
    permcodec.init(model, 1)
    _shuffled(model)
    with pytest.warns(permcodec.LossyWarning, match="relative L2 error"):
        permcodec.save(model, tmp_path / "m.perm", bits=2)
    info = permcodec.open(tmp_path / "m.perm").info()
    errors = [t["rel_error"] for t in info["tensors"] if "rel_error" in t]
    assert len(errors) == 2 and all(0 < e < 1.5 for e in errors)


# ---------------------------------------------------------------- LaPerm(bits)


def _train(opt, model, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 30, generator=g)
        y = torch.randint(0, 5, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("bits", [1, 3])
def test_laperm_bits_saves_without_loss(tmp_path, bits):
    model = _mlp()
    permcodec.init(model, 2)
    opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 0.05), 5, bits=bits)
    assert model.permcodec_plan.bits == bits
    _train(opt, model, 23)  # ends between syncs: save syncs first
    with warnings.catch_warnings():
        warnings.simplefilter("error", permcodec.LossyWarning)
        permcodec.save(model, tmp_path / "m.perm")
    got = permcodec.load(tmp_path / "m.perm")
    for name, t in model.state_dict().items():
        assert torch.equal(got[name], t), name
    with permcodec.open(tmp_path / "m.perm") as pf:
        e = pf.entry("0.weight")
        assert e.coding == "bucket-rans" and e.fields["bits"] == bits and e.rel_error == 0.0
    # the weights moved: training at b bits is not the init
    fresh = _mlp()
    permcodec.init(fresh, 2)
    assert not torch.equal(fresh[0].weight, model[0].weight)


def test_laperm_bits_state_dict_resumes_identically():
    def make():
        model = _mlp()
        permcodec.init(model, 2)
        opt = permcodec.LaPerm(model, torch.optim.Adam(model.parameters(), 0.05), 4, bits=2)
        return model, opt

    model_a, opt_a = make()
    _train(opt_a, model_a, 6)
    state = copy.deepcopy(opt_a.state_dict())  # torch state dicts share tensors
    weights = {k: v.clone() for k, v in model_a.state_dict().items()}
    _train(opt_a, model_a, 7, seed=1)

    model_b, opt_b = make()
    model_b.load_state_dict(weights)
    opt_b.load_state_dict(state)
    _train(opt_b, model_b, 7, seed=1)
    for name, t in model_a.state_dict().items():
        assert torch.equal(model_b.state_dict()[name], t), name
    _, plain = make()
    with pytest.raises(ValueError, match="bits"):
        permcodec.LaPerm(model_b, torch.optim.Adam(model_b.parameters()), 4).load_state_dict(state)
    assert plain is not None


def test_laperm_rejects_bad_bits():
    model = _mlp()
    permcodec.init(model, 2)
    for bad in (0, 9, 2.0):
        with pytest.raises(ValueError, match="bits"):
            permcodec.LaPerm(model, torch.optim.Adam(model.parameters()), 4, bits=bad)


def test_numpy_save_reads_plan_bits(tmp_path):
    tp_plan = Plan(3, bits=2)
    tp = tp_plan.add("w", InitSpec("he_uniform"), (4, 64))
    init = init_rows(tp.spec, tp.key, (4, 64), "float32")
    trained = near_init(init, np.random.default_rng(0), 1.0)
    with pytest.warns(permcodec.LossyWarning):
        pnp.save({"w": trained}, tmp_path / "m.perm", tp_plan)
    e = permcodec.open(tmp_path / "m.perm").entry("w")
    assert e.coding == "bucket-rans" and e.fields["bits"] == 2
    assert Plan.from_dict(tp_plan.to_dict()).bits == 2
