"""GTCRN: a grouped temporal convolutional recurrent network for speech enhancement.

An independent re-implementation of the network of Rong et al., "GTCRN: A Speech Enhancement
Model Requiring Ultralow Computational Resources", ICASSP 2024 (reference code MIT-licensed,
github.com/Xiaobin-Rong/gtcrn). Module and parameter names follow the published checkpoints,
so ``GTCRN().load_state_dict(ckpt["model"], strict=True)`` works for both the VoiceBank
(VCTK) and the DNS3 checkpoints.

The network reads a noisy STFT ``[B, 257, T, 2]`` (16 kHz, n_fft 512, hop 256, sqrt-Hann
window; see :func:`gtcrn_stft`) and returns the enhanced STFT of the same shape. The complex
ratio mask is applied in the :class:`ComplexRatioMask` submodule ``GTCRN.mask``, which is where
the project's MPol hook reads the mask and the noisy spectrum.

Example
-------
>>> import torch
>>> model = GTCRN().eval()
>>> wav = torch.randn(1, 16000)
>>> spec = gtcrn_stft(wav)
>>> spec.shape
torch.Size([1, 257, 63, 2])
>>> enhanced = gtcrn_istft(model(spec), length=wav.shape[-1])
>>> enhanced.shape
torch.Size([1, 16000])
"""

from __future__ import annotations

import torch
from torch import nn

#: STFT settings the published checkpoints were trained with (16 kHz audio).
N_FFT = 512
HOP_LENGTH = 256
WIN_LENGTH = 512
SAMPLE_RATE = 16000


def _window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # sqrt of a periodic Hann window: with hop = win/2 the squared window sums to one, so the
    # same window in analysis and synthesis reconstructs perfectly.
    return torch.hann_window(WIN_LENGTH, device=device, dtype=dtype).sqrt()


def gtcrn_stft(wav: torch.Tensor) -> torch.Tensor:
    """STFT of a waveform in the layout GTCRN reads.

    Arguments
    ---------
    wav : torch.Tensor
        Waveform ``[B, L]`` (or ``[L]``) at 16 kHz.

    Returns
    -------
    torch.Tensor
        Spectrum ``[B, 257, T, 2]`` (real, imaginary), ``T = L // 256 + 1``.

    Example
    -------
    >>> gtcrn_stft(torch.zeros(2, 1024)).shape
    torch.Size([2, 257, 5, 2])
    """
    squeeze = wav.dim() == 1
    if squeeze:
        wav = wav.unsqueeze(0)
    spec = torch.stft(
        wav,
        N_FFT,
        HOP_LENGTH,
        WIN_LENGTH,
        window=_window(wav.device, wav.dtype),
        center=True,
        return_complex=True,
    )
    spec = torch.view_as_real(spec)
    return spec[0] if squeeze else spec


def gtcrn_istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`gtcrn_stft`, padded or cropped to ``length`` samples.

    Arguments
    ---------
    spec : torch.Tensor
        Spectrum ``[B, 257, T, 2]`` (real, imaginary).
    length : int
        Number of output samples (the input waveform's length).

    Returns
    -------
    torch.Tensor
        Waveform ``[B, length]``.

    Example
    -------
    >>> wav = torch.randn(1, 4000)
    >>> torch.allclose(gtcrn_istft(gtcrn_stft(wav), 4000), wav, atol=1e-5)
    True
    """
    complex_spec = torch.view_as_complex(spec.contiguous())
    return torch.istft(
        complex_spec,
        N_FFT,
        HOP_LENGTH,
        WIN_LENGTH,
        window=_window(spec.device, spec.dtype),
        center=True,
        length=length,
    )


class ERB(nn.Module):
    """ERB band merging (257 bins -> 129 bands) and splitting (129 bands -> 257 bins).

    The lowest ``low_bins`` bins are kept as they are; the remaining ``high_bins`` bins are
    mapped to ``erb_bands`` bands by ``erb_fc`` and back by ``ierb_fc``. Both matrices are
    fixed triangular ERB filter banks stored in the checkpoint, so they are not trainable.

    Arguments
    ---------
    low_bins : int
        Bins passed through unchanged.
    erb_bands : int
        Bands the upper bins are merged into.
    n_bins : int
        Total number of STFT bins.

    Example
    -------
    >>> erb = ERB()
    >>> erb.bm(torch.zeros(1, 3, 10, 257)).shape
    torch.Size([1, 3, 10, 129])
    >>> erb.bs(torch.zeros(1, 2, 10, 129)).shape
    torch.Size([1, 2, 10, 257])
    """

    def __init__(self, low_bins: int = 65, erb_bands: int = 64, n_bins: int = 257):
        super().__init__()
        self.low_bins = low_bins
        high_bins = n_bins - low_bins
        self.erb_fc = nn.Linear(high_bins, erb_bands, bias=False)
        self.ierb_fc = nn.Linear(erb_bands, high_bins, bias=False)
        # Fixed filter banks (loaded from the checkpoint): MPol adapts the learned layers only.
        self.erb_fc.weight.requires_grad_(False)
        self.ierb_fc.weight.requires_grad_(False)

    def bm(self, x: torch.Tensor) -> torch.Tensor:
        """Band merging ``[..., 257] -> [..., 129]``."""
        low, high = x[..., : self.low_bins], x[..., self.low_bins :]
        return torch.cat([low, self.erb_fc(high)], dim=-1)

    def bs(self, x: torch.Tensor) -> torch.Tensor:
        """Band splitting ``[..., 129] -> [..., 257]``."""
        low, high = x[..., : self.low_bins], x[..., self.low_bins :]
        return torch.cat([low, self.ierb_fc(high)], dim=-1)


class SFE(nn.Module):
    """Subband feature extraction: stack each band with its frequency neighbours.

    ``[B, C, T, F] -> [B, C * kernel_size, T, F]``, channel ``c * kernel_size + j`` holding
    band ``f + j - kernel_size // 2`` of input channel ``c`` (zero beyond the edges).

    Arguments
    ---------
    kernel_size : int
        Odd number of neighbouring bands stacked.

    Example
    -------
    >>> SFE()(torch.zeros(2, 3, 4, 129)).shape
    torch.Size([2, 9, 4, 129])
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.unfold = nn.Unfold(kernel_size=(1, kernel_size), padding=(0, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stack neighbouring bands along channels."""
        b, c, t, f = x.shape
        return self.unfold(x).reshape(b, c * self.kernel_size, t, f)


class TRA(nn.Module):
    """Temporal recurrent attention: a per-frame, per-channel gain from the band energy.

    Arguments
    ---------
    channels : int
        Channels of the input.

    Example
    -------
    >>> TRA(8)(torch.zeros(1, 8, 5, 33)).shape
    torch.Size([1, 8, 5, 33])
    """

    def __init__(self, channels: int):
        super().__init__()
        self.att_gru = nn.GRU(channels, channels * 2, batch_first=True)
        self.att_fc = nn.Linear(channels * 2, channels)
        self.att_act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x`` ``[B, C, T, F]`` by the attention ``[B, C, T, 1]``."""
        energy = x.pow(2).mean(dim=-1)  # [B, C, T]
        att = self.att_gru(energy.transpose(1, 2))[0]
        att = self.att_act(self.att_fc(att)).transpose(1, 2)
        return x * att.unsqueeze(-1)


class ConvBlock(nn.Module):
    """Convolution (or transposed convolution), BatchNorm, then PReLU (Tanh for the last).

    Arguments
    ---------
    in_channels, out_channels : int
        Channel counts.
    kernel_size, stride, padding : tuple of int
        Convolution geometry over (time, frequency).
    groups : int
        Convolution groups.
    use_deconv : bool
        Use ``ConvTranspose2d`` (decoder) instead of ``Conv2d`` (encoder).
    is_last : bool
        Use Tanh as activation (bounded mask output).

    Example
    -------
    >>> block = ConvBlock(9, 16, (1, 5), (1, 2), (0, 2))
    >>> block(torch.zeros(1, 9, 4, 129)).shape
    torch.Size([1, 16, 4, 65])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        groups: int = 1,
        use_deconv: bool = False,
        is_last: bool = False,
    ):
        super().__init__()
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.Tanh() if is_last else nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply conv, BN and activation."""
        return self.act(self.bn(self.conv(x)))


class GTConvBlock(nn.Module):
    """Grouped temporal convolution block with temporal recurrent attention.

    Half of the channels go through SFE, a pointwise conv, a causal dilated depthwise conv
    over (time, frequency), a second pointwise conv and :class:`TRA`; the other half is
    passed through, and both halves are interleaved (channel shuffle).

    Arguments
    ---------
    channels : int
        Input and output channels.
    hidden_channels : int
        Channels of the depthwise stage.
    kernel_size : tuple of int
        Depthwise kernel (time, frequency).
    padding : tuple of int
        Depthwise padding (time, frequency) of the encoder form; time padding is done
        causally by the block itself.
    dilation : tuple of int
        Depthwise dilation (time, frequency).
    use_deconv : bool
        Use transposed convolutions (decoder).

    Example
    -------
    >>> block = GTConvBlock(16, 16, (3, 3), (0, 1), (2, 1))
    >>> block(torch.zeros(1, 16, 7, 33)).shape
    torch.Size([1, 16, 7, 33])
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        use_deconv: bool = False,
    ):
        super().__init__()
        half = channels // 2
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        # Causal in time: all the temporal context is padded at the start.
        self.pad_size = (kernel_size[0] - 1) * dilation[0]
        # A transposed conv grows the time axis by (k - 1) * d frames where a conv shrinks
        # it by as much, so its time padding crops the causal pad again to keep the frame count.
        depth_padding = (self.pad_size, padding[1]) if use_deconv else padding

        self.sfe = SFE(kernel_size=3)
        self.point_conv1 = conv(half * 3, hidden_channels, 1)
        self.point_bn1 = nn.BatchNorm2d(hidden_channels)
        self.point_act = nn.PReLU()
        self.depth_conv = conv(
            hidden_channels,
            hidden_channels,
            kernel_size,
            stride=1,
            padding=depth_padding,
            dilation=dilation,
            groups=hidden_channels,
        )
        self.depth_bn = nn.BatchNorm2d(hidden_channels)
        self.depth_act = nn.PReLU()
        self.point_conv2 = conv(hidden_channels, half, 1)
        self.point_bn2 = nn.BatchNorm2d(half)
        self.tra = TRA(half)

    @staticmethod
    def shuffle(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Interleave channels: output channel ``2c`` is ``x1[c]``, ``2c + 1`` is ``x2[c]``."""
        b, c, t, f = x1.shape
        return torch.stack([x1, x2], dim=2).reshape(b, 2 * c, t, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F] -> [B, C, T, F]``."""
        x1, x2 = torch.chunk(x, 2, dim=1)
        h = self.sfe(x1)
        h = self.point_act(self.point_bn1(self.point_conv1(h)))
        h = nn.functional.pad(h, (0, 0, self.pad_size, 0))
        h = self.depth_act(self.depth_bn(self.depth_conv(h)))
        h = self.point_bn2(self.point_conv2(h))
        h = self.tra(h)
        return self.shuffle(h, x2)


class GRNN(nn.Module):
    """Grouped GRU: the features are split in two halves, each with its own GRU.

    Arguments
    ---------
    input_size : int
        Features of the input (split in two).
    hidden_size : int
        Total output features per direction (each GRU has ``hidden_size // 2``).
    bidirectional : bool
        Bidirectional GRUs (the output then has ``2 * hidden_size`` features).

    Example
    -------
    >>> GRNN(16, 8, bidirectional=True)(torch.zeros(3, 33, 16)).shape
    torch.Size([3, 33, 16])
    """

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = False):
        super().__init__()
        self.rnn1 = nn.GRU(input_size // 2, hidden_size // 2, batch_first=True,
                           bidirectional=bidirectional)
        self.rnn2 = nn.GRU(input_size // 2, hidden_size // 2, batch_first=True,
                           bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L, input_size] -> [N, L, hidden_size * directions]``."""
        x1, x2 = torch.chunk(x, 2, dim=-1)
        return torch.cat([self.rnn1(x1)[0], self.rnn2(x2)[0]], dim=-1)


class DPGRNN(nn.Module):
    """Dual-path grouped RNN: a bidirectional pass over frequency, a causal one over time.

    Arguments
    ---------
    channels : int
        Channels (features) of the input.
    n_bands : int
        Number of frequency bands (LayerNorm shape).

    Example
    -------
    >>> DPGRNN(16, 33)(torch.zeros(1, 16, 5, 33)).shape
    torch.Size([1, 16, 5, 33])
    """

    def __init__(self, channels: int = 16, n_bands: int = 33):
        super().__init__()
        self.channels = channels
        self.intra_rnn = GRNN(channels, channels // 2, bidirectional=True)
        self.intra_fc = nn.Linear(channels, channels)
        self.intra_ln = nn.LayerNorm((n_bands, channels), eps=1e-8)
        self.inter_rnn = GRNN(channels, channels, bidirectional=False)
        self.inter_fc = nn.Linear(channels, channels)
        self.inter_ln = nn.LayerNorm((n_bands, channels), eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, F] -> [B, C, T, F]``."""
        b, c, t, f = x.shape
        x = x.permute(0, 2, 3, 1)  # [B, T, F, C]
        intra = self.intra_fc(self.intra_rnn(x.reshape(b * t, f, c)))
        intra = x + self.intra_ln(intra.reshape(b, t, f, c))
        inter = intra.permute(0, 2, 1, 3).reshape(b * f, t, c)
        inter = self.inter_fc(self.inter_rnn(inter))
        inter = inter.reshape(b, f, t, c).permute(0, 2, 1, 3)
        out = intra + self.inter_ln(inter)
        return out.permute(0, 3, 1, 2)


class Encoder(nn.Module):
    """Two strided conv blocks (129 -> 65 -> 33 bands) and three dilated GT-conv blocks.

    Example
    -------
    >>> x, skips = Encoder()(torch.zeros(1, 9, 4, 129))
    >>> x.shape, len(skips)
    (torch.Size([1, 16, 4, 33]), 5)
    """

    def __init__(self):
        super().__init__()
        self.en_convs = nn.ModuleList(
            [
                ConvBlock(9, 16, (1, 5), (1, 2), (0, 2)),
                ConvBlock(16, 16, (1, 5), (1, 2), (0, 2), groups=2),
                GTConvBlock(16, 16, (3, 3), (0, 1), (1, 1)),
                GTConvBlock(16, 16, (3, 3), (0, 1), (2, 1)),
                GTConvBlock(16, 16, (3, 3), (0, 1), (5, 1)),
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the encoding and every block's output (for the skip connections)."""
        outs = []
        for block in self.en_convs:
            x = block(x)
            outs.append(x)
        return x, outs


class Decoder(nn.Module):
    """Mirror of :class:`Encoder` with transposed convolutions; outputs a 2-channel mask.

    Example
    -------
    >>> enc = Encoder()
    >>> x, skips = enc(torch.zeros(1, 9, 4, 129))
    >>> Decoder()(x, skips).shape
    torch.Size([1, 2, 4, 129])
    """

    def __init__(self):
        super().__init__()
        self.de_convs = nn.ModuleList(
            [
                GTConvBlock(16, 16, (3, 3), (0, 1), (5, 1), use_deconv=True),
                GTConvBlock(16, 16, (3, 3), (0, 1), (2, 1), use_deconv=True),
                GTConvBlock(16, 16, (3, 3), (0, 1), (1, 1), use_deconv=True),
                ConvBlock(16, 16, (1, 5), (1, 2), (0, 2), groups=2, use_deconv=True),
                ConvBlock(16, 2, (1, 5), (1, 2), (0, 2), use_deconv=True, is_last=True),
            ]
        )

    def forward(self, x: torch.Tensor, en_outs: list[torch.Tensor]) -> torch.Tensor:
        """Decode with additive skip connections from the mirrored encoder blocks."""
        n = len(self.de_convs)
        for i, block in enumerate(self.de_convs):
            x = block(x + en_outs[n - 1 - i])
        return x


class ComplexRatioMask(nn.Module):
    """Apply a complex ratio mask to a spectrum (no parameters).

    Kept as a module of its own so that a forward hook on ``GTCRN.mask`` sees both the mask
    and the noisy spectrum.

    Example
    -------
    >>> mask = torch.zeros(1, 2, 3, 257); mask[:, 0] = 1.0
    >>> spec = torch.randn(1, 257, 3, 2)
    >>> torch.equal(ComplexRatioMask()(mask, spec), spec)
    True
    """

    def forward(
        self, mask: torch.Tensor, spec: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Complex product of ``mask`` ``[B, 2, T, F]`` and ``spec`` ``[B, F, T, 2]``.

        ``lengths`` (relative, ``[B]``) is not used here; it is accepted so that a forward
        hook on this module can read which frames of a padded batch are valid.

        Returns the enhanced spectrum ``[B, F, T, 2]``.
        """
        m_re, m_im = mask[:, 0].transpose(1, 2), mask[:, 1].transpose(1, 2)  # [B, F, T]
        y_re, y_im = spec[..., 0], spec[..., 1]
        s_re = y_re * m_re - y_im * m_im
        s_im = y_im * m_re + y_re * m_im
        return torch.stack([s_re, s_im], dim=-1)


class GTCRN(nn.Module):
    """GTCRN speech enhancer: noisy STFT ``[B, 257, T, 2]`` -> enhanced STFT, same shape.

    48,245 parameters (48,847 state-dict values with the BatchNorm statistics), of which
    the 24,576 ERB filter-bank weights are fixed and 23,669 are trainable.

    Example
    -------
    >>> model = GTCRN().eval()
    >>> model(torch.zeros(1, 257, 10, 2)).shape
    torch.Size([1, 257, 10, 2])
    """

    def __init__(self):
        super().__init__()
        self.erb = ERB(65, 64)
        self.sfe = SFE(3)
        self.encoder = Encoder()
        self.dpgrnn1 = DPGRNN(16, 33)
        self.dpgrnn2 = DPGRNN(16, 33)
        self.decoder = Decoder()
        self.mask = ComplexRatioMask()

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a noisy spectrum ``[B, 257, T, 2]``.

        ``lengths`` (relative, ``[B]``) only travels to the ``mask`` call for hooks: the
        network is causal in time, so padding reaches at most the last STFT frame of the
        valid part.
        """
        re, im = spec[..., 0], spec[..., 1]
        mag = torch.sqrt(re.pow(2) + im.pow(2) + 1e-12)
        feat = torch.stack([mag, re, im], dim=1).transpose(2, 3)  # [B, 3, T, 257]
        feat = self.sfe(self.erb.bm(feat))  # [B, 9, T, 129]
        x, en_outs = self.encoder(feat)
        x = self.dpgrnn2(self.dpgrnn1(x))
        mask = self.erb.bs(self.decoder(x, en_outs))  # [B, 2, T, 257]
        return self.mask(mask, spec, lengths=lengths)
