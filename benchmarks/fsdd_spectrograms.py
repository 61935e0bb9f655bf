"""Spectrograms of generated samples beside real recordings, as one PNG (needs matplotlib).

    python benchmarks/fsdd_spectrograms.py --model sashimi_ar_fsdd --real /path/to/fsdd/recordings \\
        --out docs/fsdd_samples.png

Generates ``--n`` one-second samples (seeded) and draws their log-power spectrograms (0-4 kHz)
in the top rows, and ``--n-real`` real test recordings (takes 0-4, placed in the middle of a
one-second window, as the model's training data was) in the bottom row. Voiced speech shows as
horizontal harmonic stripes under moving formants; a word as a burst between silences.
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sashimi import load_model  # noqa: E402
from sashimi.data.audio import read_audio  # noqa: E402


def spectrogram(wav: np.ndarray, rate: int, n_fft: int = 256, hop: int = 64) -> np.ndarray:
    """Log power (dB, floor -90 dB re 1) of a Hann-windowed STFT: (n_fft // 2 + 1, frames)."""
    window = np.hanning(n_fft)
    frames = 1 + max(0, len(wav) - n_fft) // hop
    stft = np.stack([np.fft.rfft(wav[i * hop:i * hop + n_fft] * window) for i in range(frames)], axis=1)
    return 10 * np.log10(np.maximum(np.abs(stft) ** 2, 1e-9))


def real_clips(folder: str, n: int, length: int, rate: int) -> list[tuple[str, np.ndarray]]:
    """``n`` test recordings (takes 0-4), one per digit in turn, centred in ``length`` samples."""
    names = sorted(f for f in os.listdir(folder) if re.fullmatch(r"\d_[A-Za-z]+_[0-4]\.wav", f))
    picked, digits = [], set()
    for name in names:  # different digits first
        if name[0] not in digits and len(picked) < n:
            picked.append(name)
            digits.add(name[0])
    clips = []
    for name in picked:
        wav = read_audio(os.path.join(folder, name), rate)[0].numpy()[:length]
        out = np.zeros(length, dtype=np.float32)
        start = (length - len(wav)) // 2
        out[start:start + len(wav)] = wav
        clips.append((name, out))
    return clips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sashimi_ar_fsdd", help="pretrained name or checkpoint (default: sashimi_ar_fsdd)")
    parser.add_argument("--real", required=True, help="folder of FSDD recordings ({digit}_{speaker}_{take}.wav)")
    parser.add_argument("--out", required=True, help="PNG file to write (refused if it exists, unless -f)")
    parser.add_argument("--n", type=int, default=8, help="generated samples (default: 8)")
    parser.add_argument("--n-real", type=int, default=4, help="real recordings (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--nucleus-p", type=float, default=1.0, help="nucleus mass (default: 1.0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default: 1.0)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite --out")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        parser.error("this script needs matplotlib: pip install matplotlib")
    if os.path.exists(args.out) and not args.force:
        parser.error(f"{args.out} exists (use -f to overwrite)")
    if not os.path.isdir(args.real):
        parser.error(f"--real: not a folder: {args.real}")
    model = load_model(args.model)
    rate = model.config.sample_rate
    wavs = model.unconditional_generate(args.n, args.nucleus_p, length=rate, seed=args.seed,
                                        temperature=args.temperature).numpy()
    real = real_clips(args.real, args.n_real, rate, rate)
    cols = 4
    rows = -(-args.n // cols) + -(-len(real) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows), squeeze=False, sharey=True)
    sampling = "" if args.nucleus_p == 1 and args.temperature == 1 else \
        f", p {args.nucleus_p:g}, T {args.temperature:g}"
    # a clip that never leaves silence draws as a flat panel: say so in its title
    panels = [(f"generated #{i} (seed {args.seed}{sampling}){': silent' if abs(w).max() < 1e-3 else ''}", w)
              for i, w in enumerate(wavs)]
    panels += [None] * (-len(panels) % cols) + [(f"real: {name}", w) for name, w in real]
    for ax, panel in zip(axes.flat, panels + [None] * (rows * cols - len(panels))):
        if panel is None:
            ax.axis("off")
            continue
        title, wav = panel
        spec = spectrogram(wav, rate)
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=spec.max() - 80, vmax=spec.max(),
                  extent=(0, len(wav) / rate, 0, rate / 2000))
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz", fontsize=7)
    fig.suptitle(f"{args.model}: generated (top) and real FSDD test recordings (bottom)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
