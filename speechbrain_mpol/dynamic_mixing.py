"""Dynamic mixing: clean speech + real noise drawn afresh for every example and every epoch.

The source-domain speech (``corpus/speech/train``, about half an hour) is too small for a fixed
mixed training set, so every training example is mixed when it is read: a random speech crop,
a fresh noise clip at a random offset (looped when shorter than the speech), an SNR uniform in
``snr_range`` and a speech level uniform in ``level_range``. The fixed validation and test sets
(:mod:`speechbrain_mpol.source_corpus`) are drawn by the same :meth:`DynamicMixer.draw`, once,
from their own seeds.

Levels are RMS levels in dBFS (:func:`speechbrain.processing.signal_processing.compute_amplitude`
with ``amp_type="rms"``; SpeechBrain's ``rescale`` only knows average and peak amplitude). The
noise is added by :func:`torchaudio.functional.add_noise` (SNR on whole-segment energy). If the
mixture or its clean target would peak above ``max_peak``, both are scaled down together: the
SNR is kept, the speech level then ends below the drawn one.

Example
-------
>>> clean = 0.1 * torch.sin(torch.arange(16000) / 7.0)
>>> noise = torch.randn(16000, generator=torch.Generator().manual_seed(0))
>>> noisy, target, gain = mix_at_snr_and_level(clean, noise, snr_db=5.0, level_db=-25.0)
>>> round(float(snr_of(noisy, target)), 3), round(float(level_of(target)), 3), gain
(5.0, -25.0, 1.0)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import soundfile as sf
import torch
import torchaudio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.processing.signal_processing import compute_amplitude, dB_to_amplitude
from speechbrain.utils.data_pipeline import provides, takes

from speechbrain_mpol.audio import AudioError

#: A noise segment quieter than this RMS (about -80 dBFS: ESC-50 clips hold digital silence)
#: cannot be scaled to an SNR; another clip or offset is drawn instead.
SILENT_RMS = 1e-4
#: How many noise draws may be silent in a row before the noise list is declared unusable.
MAX_NOISE_TRIES = 50


def level_of(wav: torch.Tensor) -> torch.Tensor:
    """RMS level of a 1-D waveform in dBFS (SpeechBrain's ``compute_amplitude``)."""
    return compute_amplitude(wav, amp_type="rms", scale="dB").reshape(())


def snr_of(noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """SNR in dB of a mixture against its clean part, on whole-signal energy."""
    noise = noisy - clean
    return 10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum())


def mix_at_snr_and_level(
    clean: torch.Tensor,
    noise: torch.Tensor,
    snr_db: float,
    level_db: float,
    max_peak: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Set the speech level, add the noise at an SNR, keep the peak below ``max_peak``.

    Arguments
    ---------
    clean : torch.Tensor
        Clean speech ``[samples]`` (not silent).
    noise : torch.Tensor
        Noise ``[samples]``, same length, not silent.
    snr_db : float
        Speech-to-noise energy ratio of the mixture, in dB.
    level_db : float
        RMS level of the speech in dBFS before the peak limit.
    max_peak : float
        Largest absolute sample value allowed in the mixture and in the clean target.

    Returns
    -------
    noisy, clean : torch.Tensor
        The mixture and its clean target, scaled by the same gain.
    gain : float
        The peak-limiting gain (1.0 when the mixture stayed below ``max_peak``).
    """
    clean = clean * dB_to_amplitude(level_db - level_of(clean))
    noisy = torchaudio.functional.add_noise(
        clean[None], noise[None], torch.tensor([float(snr_db)])
    )[0]
    # The clean target can peak higher than the mixture (noise may cancel a speech peak).
    peak = float(compute_amplitude(torch.stack([noisy, clean]), amp_type="peak").max())
    gain = min(1.0, max_peak / peak)
    return noisy * gain, clean * gain, gain


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(generator: torch.Generator, high: int) -> int:
    """An integer uniform in ``[0, high)``."""
    return int(torch.randint(high, (), generator=generator))


def read_segment(path: str | os.PathLike, start: int = 0, frames: int = -1) -> torch.Tensor:
    """``frames`` samples of a mono audio file from ``start``, as float32 (soundfile)."""
    try:
        data, _ = sf.read(str(path), dtype="float32", start=start, frames=frames)
    except Exception as err:  # libsndfile raises several types for missing or corrupt files
        raise AudioError(path, f"unreadable audio ({err})") from None
    if data.ndim != 1:
        raise AudioError(path, f"{data.shape[1]} channels; the corpus is mono")
    return torch.from_numpy(data)


def random_crop(
    path: str | os.PathLike, length: int, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """A crop of ``length`` samples at a random offset (the whole file when shorter).

    Returns
    -------
    wav : torch.Tensor
        The crop.
    start : int
        Its first sample in the file.
    """
    total = sf.info(str(path)).frames
    if total <= length:
        return read_segment(path), 0
    start = _randint(generator, total - length + 1)
    return read_segment(path, start, length), start


@dataclass
class Mixture:
    """One mixed example and what was drawn for it."""

    noisy: torch.Tensor
    clean: torch.Tensor
    noise: str        #: path of the noise clip
    noise_start: int  #: offset of the segment in the (looped) noise clip
    snr_db: float
    level_db: float   #: drawn speech level; the final one is ``level_db + 20 log10(gain)``
    gain: float       #: peak-limiting gain applied to mixture and clean


class DynamicMixer:
    """Draws noise, SNR and level for speech segments from one seeded random stream.

    The stream is reseeded by :meth:`set_epoch` (from ``seed`` and the epoch), so every epoch
    draws anew, and a run resumed at an epoch boundary draws exactly what the uninterrupted run
    would have (data loading stays in the training process: ``num_workers: 0``).

    Arguments
    ---------
    noise_files : sequence of str or PathLike
        The noise clips (mono, ``sample_rate``); one is drawn uniformly per example.
    snr_range : (float, float)
        SNR in dB, drawn uniformly.
    level_range : (float, float)
        Speech RMS level in dBFS, drawn uniformly.
    crop_seconds : float
        Length of the training speech crops (utterances shorter than that are used whole).
    max_peak : float
        Peak limit of the mixture (see :func:`mix_at_snr_and_level`).
    seed : int
        Base seed of the random stream.
    sample_rate : int
        Sample rate of speech and noise.
    cache_noise : bool
        Keep every noise clip in memory once decoded (the 190 training clips: about 60 MB).
        Decoding a whole clip for every example was the largest cost of a training step's data
        on a GPU; the random stream is the same either way.

    Example
    -------
    >>> mixer = DynamicMixer([], (0.0, 15.0), (-35.0, -15.0), crop_seconds=2.0)
    >>> mixer.crop_length
    32000
    """

    def __init__(
        self,
        noise_files: Sequence[str | os.PathLike],
        snr_range: Sequence[float] = (0.0, 15.0),
        level_range: Sequence[float] = (-35.0, -15.0),
        crop_seconds: float = 4.0,
        max_peak: float = 0.95,
        seed: int = 1234,
        sample_rate: int = 16000,
        cache_noise: bool = True,
    ):
        self.noise_files = [str(f) for f in noise_files]
        self.snr_range = tuple(float(x) for x in snr_range)
        self.level_range = tuple(float(x) for x in level_range)
        self.crop_length = int(round(crop_seconds * sample_rate))
        self.max_peak = float(max_peak)
        self.seed = int(seed)
        self.sample_rate = sample_rate
        self.noise_cache: dict[str, torch.Tensor] | None = {} if cache_noise else None
        self.generator = torch.Generator()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Restart the random stream at the one of ``epoch``."""
        self.epoch = int(epoch)
        # A fixed odd multiplier keeps (seed, epoch) pairs apart for any seed below 2**31.
        self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)

    def noise_clip(self, path: str) -> torch.Tensor:
        """The whole noise clip at ``path``, decoded once when ``cache_noise`` is on."""
        if self.noise_cache is None:
            return read_segment(path)
        if path not in self.noise_cache:
            self.noise_cache[path] = read_segment(path)
        return self.noise_cache[path]

    def noise_segment(self, length: int) -> tuple[torch.Tensor, str, int]:
        """A non-silent noise segment of ``length`` samples: clip, offset, looped if short."""
        if not self.noise_files:
            raise ValueError("DynamicMixer has no noise files")
        for _ in range(MAX_NOISE_TRIES):
            path = self.noise_files[_randint(self.generator, len(self.noise_files))]
            clip = self.noise_clip(path)
            if len(clip) < length:  # loop it, then start anywhere inside the first copy
                start = _randint(self.generator, len(clip))
                clip = clip.repeat(math.ceil(length / len(clip)) + 1)
            else:
                start = _randint(self.generator, len(clip) - length + 1)
            segment = clip[start : start + length].clone()  # never a view into the cache
            if float(segment.pow(2).mean().sqrt()) >= SILENT_RMS:
                return segment, path, start
        raise ValueError(f"{MAX_NOISE_TRIES} noise segments in a row were silent; "
                         f"check the noise list (last: {path})")

    def draw(self, speech: torch.Tensor) -> Mixture:
        """Mix ``speech`` with a fresh noise segment at a random SNR and level."""
        if float(speech.pow(2).mean().sqrt()) < SILENT_RMS:
            raise ValueError("cannot mix a silent speech segment")
        noise, path, start = self.noise_segment(len(speech))
        snr = _uniform(self.generator, *self.snr_range)
        level = _uniform(self.generator, *self.level_range)
        noisy, clean, gain = mix_at_snr_and_level(speech, noise, snr, level, self.max_peak)
        return Mixture(noisy, clean, path, start, snr, level, gain)

    def pipeline(self) -> Callable:
        """The dynamic item ``wav -> noisy_sig, clean_sig``: a random crop, mixed anew."""

        @takes("wav")
        @provides("noisy_sig", "clean_sig")
        def mix_on_the_fly(wav):
            speech, _ = random_crop(wav, self.crop_length, self.generator)
            mixture = self.draw(speech)
            yield mixture.noisy
            yield mixture.clean

        return mix_on_the_fly


def dynamic_mixing_dataset(
    speech_csv: str | os.PathLike, mixer: DynamicMixer
) -> DynamicItemDataset:
    """A ``DynamicItemDataset`` over a speech list (CSV with ``ID,duration,wav``), mixed on read.

    Arguments
    ---------
    speech_csv : str or PathLike
        The clean speech manifest (``speech_train.csv`` of :mod:`speechbrain_mpol.source_corpus`).
    mixer : DynamicMixer
        Draws the noise, SNR and level; call its ``set_epoch`` at the start of every epoch.

    Returns
    -------
    DynamicItemDataset
        Items ``id, noisy_sig, clean_sig``.
    """
    return DynamicItemDataset.from_csv(
        csv_path=str(speech_csv),
        dynamic_items=[mixer.pipeline()],
        output_keys=["id", "noisy_sig", "clean_sig"],
    )
