"""``row-rans``: one word segment per lane, decoded a run of lanes at a time."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from permcodec import FormatError, IntegrityError
from permcodec.coding import rans, runs
from permcodec.core.initializers import InitSpec, initial_rows
from permcodec.core.plan import Plan
from permcodec.format.container import section_digest
from permcodec.format.reader import decode_tensor
from permcodec.format.writer import encode_entry

SPECS = [
    InitSpec("he_uniform"),
    InitSpec("he_normal", density=0.3),
    InitSpec("constant", value=0.08, random_sign=True),
]


def _rows(rng: np.random.Generator, rows: int, m: int, repeats: list[bool]) -> tuple:
    """Class rows, some permutations of 0..m-1, some with repeated classes."""
    cls = np.stack(
        [rng.integers(0, max(1, m - 2), m) if rep else rng.permutation(m) for rep in repeats]
    )
    counts = np.stack([np.bincount(r, minlength=m) for r in cls]).astype(np.int64)
    return cls, counts


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_segments_round_trip_and_any_run_of_lanes_decodes_alone(data):
    rows = data.draw(st.integers(1, 12), label="rows")
    m = data.draw(st.integers(1, 60), label="m")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    repeats = data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    cls, counts = _rows(rng, rows, m, repeats)
    lanes = data.draw(st.integers(1, rows), label="lanes")

    states, lengths, words = rans.encode_rows(cls, counts, lanes)
    ref = rans.REFERENCE["encode_rows"](cls, counts, lanes)
    for got, want in zip((states, lengths, words), ref, strict=True):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert np.array_equal(rans.decode_rows(states, lengths, words, counts, m), cls)

    bounds = rans.lane_bounds(rows, lanes)
    l0 = data.draw(st.integers(0, lanes - 1), label="l0")
    l1 = data.draw(st.integers(l0 + 1, lanes), label="l1")
    starts = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))])
    r0, r1 = bounds[l0], bounds[l1]
    args = (
        states[l0:l1],
        lengths[l0:l1],
        words[starts[l0] : starts[l1]],
        counts[r0:r1],
        m,
        "t",
        bounds[l0 : l1 + 1] - r0,
    )
    assert np.array_equal(rans.decode_rows(*args), cls[r0:r1])
    assert np.array_equal(rans.REFERENCE["decode_rows_window"](*args)[0], cls[r0:r1])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_segments_fail_alike_in_both_decoders(data):
    rows = data.draw(st.integers(1, 8))
    m = data.draw(st.integers(2, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cls, counts = _rows(
        rng, rows, m, data.draw(st.lists(st.booleans(), min_size=rows, max_size=rows))
    )
    states, lengths, words = rans.encode_rows(cls, counts, data.draw(st.integers(1, rows)))
    states, words = states.copy(), words.copy()
    if words.size and data.draw(st.booleans()):
        words[data.draw(st.integers(0, words.size - 1))] ^= np.uint32(
            1 << data.draw(st.integers(0, 31))
        )
    else:
        states[data.draw(st.integers(0, states.size - 1))] ^= np.uint64(
            1 << data.draw(st.integers(0, 62))
        )
    outcomes = []
    reference = rans.REFERENCE["decode_rows_window"]
    for decode in (rans.decode_rows, lambda *a: reference(*a)[0]):
        try:
            outcomes.append(("ok", decode(states, lengths, words, counts, m, "t").tobytes()))
        except IntegrityError as e:
            outcomes.append(("error", str(e)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_tensor_decoded_one_lane_at_a_time_is_bit_exact(spec, threads, monkeypatch):
    shape = (200, 600)
    plan = Plan(7)
    tp = plan.add("w", spec, shape)
    init = initial_rows(tp.spec, tp.key, shape, "float32")
    rng = np.random.default_rng(1)
    trained = np.take_along_axis(init, np.argsort(rng.random(shape), axis=1), axis=1)
    entry, payload = encode_entry("w", trained, "float32", tp)
    assert entry["coding"] == "row-rans" and entry["lanes"] > 1
    entry["offset"], entry["length"] = 0, len(payload)
    monkeypatch.setattr(runs, "DECODE_CHUNK", 1)  # every lane its own run
    monkeypatch.setenv("PERMCODEC_THREADS", threads)
    assert runs.decode_threads() == int(threads)
    assert decode_tensor(entry, payload).tobytes() == trained.tobytes()
    assert 8 * len(payload) <= 1.01 * entry["bound_bits"] + 96 * entry["lanes"] + 64


def _entry_and_payload() -> tuple[dict, bytes]:
    plan = Plan(3)
    tp = plan.add("w", InitSpec("he_uniform"), (64, 784))
    init = initial_rows(tp.spec, tp.key, (64, 784), "float32")
    entry, payload = encode_entry("w", init[:, ::-1].copy(), "float32", tp)
    assert entry["coding"] == "row-rans" and entry["lanes"] > 1
    entry["offset"], entry["length"] = 0, len(payload)
    return entry, payload


def _with_digest(entry: dict, payload: bytes) -> dict:
    return dict(entry, payload_digest=section_digest(payload), length=len(payload))


def test_segment_lengths_that_do_not_tile_the_words_are_refused():
    entry, payload = _entry_and_payload()
    lanes = entry["lanes"]
    lengths = np.frombuffer(payload, "<u4", lanes, 8 * lanes).copy()
    lengths[0] += 1
    bad = payload[: 8 * lanes] + lengths.tobytes() + payload[12 * lanes :]
    with pytest.raises(FormatError, match="segment lengths add up"):
        decode_tensor(_with_digest(entry, bad), bad)


def test_a_segment_longer_than_its_steps_is_refused():
    entry, payload = _entry_and_payload()
    lanes = entry["lanes"]
    lengths = np.frombuffer(payload, "<u4", lanes, 8 * lanes).copy()
    total = int(lengths.sum())
    lengths[:] = 0
    lengths[0] = total  # same word count, all claimed by one lane
    bad = payload[: 8 * lanes] + lengths.tobytes() + payload[12 * lanes :]
    with pytest.raises(FormatError, match="longer than its steps"):
        decode_tensor(_with_digest(entry, bad), bad)


def test_the_first_damaged_run_is_reported_whatever_the_threads(monkeypatch):
    entry, payload = _entry_and_payload()
    lanes = entry["lanes"]
    bad = bytearray(payload)
    for lane in (1, lanes - 1):  # two damaged lanes: the earlier one is reported
        bad[8 * lane] ^= 1
    entry = _with_digest(entry, bytes(bad))
    monkeypatch.setattr(runs, "DECODE_CHUNK", 1)
    messages = set()
    for threads in ("1", "4"):
        monkeypatch.setenv("PERMCODEC_THREADS", threads)
        with pytest.raises(IntegrityError) as err:
            decode_tensor(entry, bytes(bad))
        messages.add(str(err.value))
    assert len(messages) == 1


def test_payload_too_short_for_its_lanes_is_refused():
    entry, payload = _entry_and_payload()
    bad = payload[: 12 * entry["lanes"] - 4]
    with pytest.raises(FormatError, match="does not fit"):
        decode_tensor(_with_digest(entry, bad), bad)
