"""Synthetic source domain: seeded stationary noises, composed sentences and TTS voices.

The project trains its own MetricGAN+ generator on material made entirely here, so that the
model is good on this "source" domain and then meets real recordings as a domain shift. All
randomness comes from a caller-supplied :class:`numpy.random.Generator`, so a seed fixes the
material. Speech comes from the Debian ``flite`` and ``festival`` (``text2wave``) engines,
run as subprocesses; nothing is read from disk apart from the engines' own output files.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> noise = synth_noise("pink", 16000, 16000, rng)
>>> noise.shape, noise.dtype
((16000,), dtype('float32'))
>>> isinstance(compose_sentence(rng), str)
True
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from math import gcd

import numpy as np
import soundfile as sf
from scipy import signal

#: Stationary noise types that :func:`synth_noise` can make.
NOISE_KINDS = ("white", "pink", "brown", "hum", "bandlimited")

_EPS = 1e-12


def _unit_rms(x: np.ndarray) -> np.ndarray:
    x = x - np.mean(x)
    return (x / max(float(np.sqrt(np.mean(np.square(x)))), _EPS)).astype(np.float32)


def _shaped_noise(num_samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a power spectrum proportional to ``1 / f**exponent``."""
    spec = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(len(spec), dtype=np.float64)
    # The DC bin would be infinite; give it the weight of the first bin and then remove the
    # mean, so the noise has no offset but keeps its low-frequency energy.
    freqs[0] = 1.0
    spec = spec / freqs ** (exponent / 2.0)
    return np.fft.irfft(spec, n=num_samples)


def synth_noise(
    kind: str, num_samples: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Make ``num_samples`` of stationary noise of type ``kind`` with unit RMS.

    Arguments
    ---------
    kind : str
        One of :data:`NOISE_KINDS`: ``white``; ``pink`` (1/f); ``brown`` (1/f^2);
        ``hum`` (50 or 60 Hz mains with random harmonics plus a little white noise);
        ``bandlimited`` (white noise through a Butterworth band-pass with a random band).
    num_samples : int
        Length of the output.
    sample_rate : int
        Sample rate in Hz (sets the hum frequency and the band edges).
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same noise.

    Returns
    -------
    numpy.ndarray
        The noise, shape ``[num_samples]``, float32, zero mean, RMS 1.

    Example
    -------
    >>> import numpy as np
    >>> a = synth_noise("hum", 8000, 16000, np.random.default_rng(1))
    >>> b = synth_noise("hum", 8000, 16000, np.random.default_rng(1))
    >>> bool(np.array_equal(a, b)), round(float(np.sqrt(np.mean(a ** 2))), 3)
    (True, 1.0)
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if kind == "white":
        x = rng.standard_normal(num_samples)
    elif kind == "pink":
        x = _shaped_noise(num_samples, 1.0, rng)
    elif kind == "brown":
        x = _shaped_noise(num_samples, 2.0, rng)
    elif kind == "hum":
        t = np.arange(num_samples) / sample_rate
        base = float(rng.choice([50.0, 60.0]))
        x = np.zeros(num_samples)
        # Mains hum is rich in odd harmonics; random decaying amplitudes and phases make each
        # draw a different "device".
        for harmonic in range(1, 16):
            freq = base * harmonic
            if freq >= sample_rate / 2:
                break
            weight = (1.5 if harmonic % 2 else 0.6) / harmonic ** rng.uniform(0.5, 1.5)
            x += weight * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        x = _unit_rms(x) + rng.uniform(0.05, 0.2) * rng.standard_normal(num_samples)
    else:  # bandlimited
        nyquist = sample_rate / 2
        low = float(np.exp(rng.uniform(np.log(80.0), np.log(0.35 * nyquist))))
        high = min(low * float(np.exp(rng.uniform(np.log(1.5), np.log(8.0)))), 0.95 * nyquist)
        order = int(rng.integers(2, 7))
        sos = signal.butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
        # Filter a longer signal and drop the start so the filter's transient does not make
        # the noise non-stationary.
        pad = min(sample_rate // 4, 4 * num_samples)
        x = signal.sosfilt(sos, rng.standard_normal(num_samples + pad))[pad:]
    return _unit_rms(np.asarray(x, dtype=np.float64))


@dataclass(frozen=True)
class Voice:
    """One TTS speaker.

    Arguments
    ---------
    name : str
        Short identifier used in manifests and file names.
    engine : str
        ``"flite"`` or ``"festival"`` (festival voices run through ``text2wave``).
    voice_id : str
        The engine's voice name (``flite -voice`` argument, or festival ``voice_<id>``).
    f0_mean : float
        Nominal mean pitch in Hz, the centre of the random pitch variation (flite only).
    """

    name: str
    engine: str
    voice_id: str
    f0_mean: float


#: The speakers of the source domain (flite's built-in voices, two festival voices).
VOICES: tuple[Voice, ...] = (
    Voice("flite_kal", "flite", "kal", 105.0),
    Voice("flite_kal16", "flite", "kal16", 105.0),
    Voice("flite_awb", "flite", "awb", 120.0),
    Voice("flite_rms", "flite", "rms", 110.0),
    Voice("flite_slt", "flite", "slt", 170.0),
    Voice("fest_kal", "festival", "kal_diphone", 105.0),
    Voice("fest_slt_hts", "festival", "cmu_us_slt_arctic_hts", 170.0),
)

_SUBJECTS = (
    "the old man", "my sister", "a young doctor", "the teacher", "our neighbour", "the pilot",
    "a small child", "the farmer", "her brother", "the engineer", "every student", "the captain",
    "a tired nurse", "the baker", "his friend", "the manager", "the driver", "my grandmother",
)
_VERBS = (
    "found", "painted", "carried", "bought", "opened", "cleaned", "dropped", "wanted",
    "borrowed", "fixed", "watched", "ordered", "lifted", "described", "forgot", "packed",
)
_OBJECTS = (
    "the red box", "a heavy table", "the broken radio", "two green apples", "the kitchen door",
    "a long letter", "the blue car", "an empty bottle", "the garden gate", "a warm coat",
    "the wooden chair", "a map of the city", "the silver key", "a bag of rice", "the last train",
)
_ADVERBS = (
    "slowly", "quietly", "yesterday", "again", "carefully", "early this morning", "at noon",
    "without a word", "in the rain", "before dinner", "after the meeting", "last winter",
)
_PLACES = (
    "near the river", "in the market", "behind the station", "at the old school",
    "on the third floor", "in the village", "by the harbour", "under the bridge",
)
_NUMBERS = (
    "two", "three", "four", "five", "seven", "nine", "eleven", "twelve", "twenty",
    "thirty six", "forty", "fifty two", "one hundred",
)
_NOUNS = ("boxes", "letters", "apples", "tickets", "chairs", "birds", "books", "coins", "boats")
_QUESTION_WORDS = ("why", "when", "where", "how")


def compose_sentence(rng: np.random.Generator) -> str:
    """Compose an English sentence from built-in word lists and templates.

    Arguments
    ---------
    rng : numpy.random.Generator
        Picks the template and the words.

    Returns
    -------
    str
        A sentence of roughly 4 to 12 words ending with punctuation.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> len({compose_sentence(rng) for _ in range(20)}) > 15
    True
    """

    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    template = int(rng.integers(6))
    if template == 0:
        text = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_ADVERBS)}."
    elif template == 1:
        text = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_NUMBERS)} {pick(_NOUNS)} {pick(_PLACES)}."
    elif template == 2:
        text = (f"{pick(_QUESTION_WORDS)} did {pick(_SUBJECTS)} leave {pick(_OBJECTS)} "
                f"{pick(_PLACES)}?")
    elif template == 3:
        text = f"{pick(_ADVERBS)}, {pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}."
    elif template == 4:
        text = (f"there are {pick(_NUMBERS)} {pick(_NOUNS)} {pick(_PLACES)}, "
                f"said {pick(_SUBJECTS)}.")
    else:
        text = f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} and {pick(_OBJECTS)}."
    return text[0].upper() + text[1:]


def _resample(x: np.ndarray, orig: int, target: int) -> np.ndarray:
    if orig == target:
        return x
    div = gcd(int(orig), int(target))
    return signal.resample_poly(x, target // div, orig // div)


def _trim_silence(x: np.ndarray, sample_rate: int, threshold_db: float = -40.0,
                  margin_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``threshold_db`` below the peak frame."""
    frame = max(1, sample_rate // 100)
    n_frames = len(x) // frame
    if n_frames == 0:
        return x
    energy = np.sqrt(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10.0 ** (threshold_db / 20.0))
    if len(loud) == 0:
        return x
    # Keep a short margin so word onsets and release tails are not clipped.
    margin = int(margin_s * sample_rate)
    start = max(0, loud[0] * frame - margin)
    stop = min(len(x), (loud[-1] + 1) * frame + margin)
    return x[start:stop]


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(
            f"'{program}' not found on PATH; the synthetic source domain needs it "
            "(Debian: apt-get install flite festival festvox-kallpc16k festvox-us-slt-hts)"
        )
    return path


def synth_speech(
    text: str, voice: Voice, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Speak ``text`` with a TTS ``voice`` and return the waveform at ``sample_rate``.

    The speaking rate and pitch are varied at random: flite gets a random
    ``duration_stretch`` and ``int_f0_target_mean``, festival a random ``Duration_Stretch``
    (ignored by HTS voices); every voice then gets a small random "tape speed" change
    (resampling, which shifts pitch and rate together), so even voices that ignore the
    engine parameters vary. Leading and trailing silence is trimmed lightly.

    Arguments
    ---------
    text : str
        What to say.
    voice : Voice
        One of :data:`VOICES` (or any :class:`Voice`).
    sample_rate : int
        Output sample rate in Hz (the project uses 16000).
    rng : numpy.random.Generator
        Source of the rate and pitch variation.

    Returns
    -------
    numpy.ndarray
        Mono float32 waveform, shape ``[samples]``.

    Raises
    ------
    RuntimeError
        If the engine's program (``flite`` or ``text2wave``) is missing or fails.

    Example
    -------
    >>> import numpy as np, shutil
    >>> if shutil.which("flite"):
    ...     wav = synth_speech("hello", VOICES[1], 16000, np.random.default_rng(0))
    ...     assert wav.dtype == np.float32 and len(wav) > 1000
    """
    stretch = float(rng.uniform(0.85, 1.2))
    f0 = float(voice.f0_mean * rng.uniform(0.85, 1.2))
    tape = float(rng.uniform(0.95, 1.05))
    fd, tmp = tempfile.mkstemp(prefix="mpol_tts_", suffix=".wav")
    os.close(fd)
    try:
        if voice.engine == "flite":
            cmd = [_require("flite"), "-voice", voice.voice_id, "-t", text, "-o", tmp,
                   "--setf", f"duration_stretch={stretch:.3f}",
                   "--setf", f"int_f0_target_mean={f0:.1f}"]
            stdin = None
        elif voice.engine == "festival":
            cmd = [_require("text2wave"), "-eval", f"(voice_{voice.voice_id})",
                   "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})", "-o", tmp]
            stdin = text
        else:
            raise ValueError(f"unknown TTS engine {voice.engine!r}")
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            raise RuntimeError(
                f"{os.path.basename(cmd[0])} failed for voice {voice.name} "
                f"(exit {proc.returncode}): {proc.stderr.strip()[:300]}"
            )
        data, rate = sf.read(tmp, dtype="float32", always_2d=True)
    finally:
        os.unlink(tmp)
    wav = data.mean(axis=1).astype(np.float64)
    # Tape speed: pretend the file was recorded at ``rate * tape`` and bring it to the target.
    wav = _resample(wav, int(round(rate * tape / 10.0)) * 10, sample_rate)
    wav = _trim_silence(wav, sample_rate)
    return wav.astype(np.float32)
