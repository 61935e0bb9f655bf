"""A static page to listen to a class-conditional model: docs/samples/index.html.

Regenerate the committed page (the README links it) for the bundled model, from a clone, with one
command, then commit docs/samples/:

    python benchmarks/fsdd_samples_page.py -f

``--real`` defaults to the FSDD test recordings in tests/fixtures/fsdd (so it needs nothing but the
repository); ``--model`` to the bundled sashimi_ar_fsdd; ``--out`` to docs/samples.

For each class (digit), ``--per-class`` conditional samples beside one real FSDD test recording
(takes 0-4: never trained on), then ``--unconditional`` samples without a label; each with its
spectrogram (0-4 kHz, log power) and what the bundled digit classifier hears in it. Everything
is seeded (``--seed``), so the page is reproducible. The page is plain HTML with relative links to
WAV and PNG files beside it: no server, no scripts, nothing fetched from elsewhere.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import struct
import sys
import zlib

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sashimi import load_classifier, load_model  # noqa: E402
from sashimi.data.audio import read_audio, write_wav  # noqa: E402
from sashimi.eval import match_classes  # noqa: E402

from fsdd_spectrograms import spectrogram  # noqa: E402  (benchmarks/, this script's folder, is on sys.path)


# ---- spectrogram images (numpy + zlib: no plotting library needed) ------------------------------
def spectrogram_db(wav: np.ndarray, n_fft: int = 256, hop: int = 32) -> np.ndarray:
    """Log power (dB re 1, floor -90 dB) with frames centred on the samples (the signal padded by
    half a window each side): :func:`fsdd_spectrograms.spectrogram` at a finer hop."""
    return spectrogram(np.pad(wav, (n_fft // 2, n_fft // 2)), 0, n_fft, hop)


def _colour(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8 along black, purple, orange, pale yellow (a magma-like ramp)."""
    stops = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], dtype=np.float64)
    pos = np.clip(x, 0, 1) * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    f = (pos - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def write_png(path: str, index: np.ndarray, palette: np.ndarray) -> None:
    """A palette PNG: ``index`` (H, W) uint8 into ``palette`` (256, 3) uint8. A third of a truecolour
    file's size (the page is committed: each image ~15 KB instead of ~50 KB)."""
    h, w = index.shape
    raw = b"".join(b"\x00" + index[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
    png += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def spectrogram_png(path: str, wav: np.ndarray, floor_db: float = -80.0, top_db: float = 0.0) -> None:
    db = spectrogram_db(wav)[::-1]  # low frequencies at the bottom
    level = np.round(np.clip((db - floor_db) / (top_db - floor_db), 0, 1) * 255).astype(np.uint8)  # 256 shades
    write_png(path, level, _colour(np.linspace(0, 1, 256)))


# ---- the page ---------------------------------------------------------------------------------------
def real_recordings(folder: str, classes: list[str], length: int, rate: int) -> dict[str, tuple[str, np.ndarray]]:
    """One test recording (take 0-4) per digit class, centred in ``length`` samples."""
    out = {}
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"(\d)_([A-Za-z]+)_([0-4])\.wav", name)
        if m and m.group(1) in classes and m.group(1) not in out:
            wav = read_audio(os.path.join(folder, name), rate)[0].numpy()[:length]
            clip = np.zeros(length, dtype=np.float32)
            start = (length - len(wav)) // 2
            clip[start:start + len(wav)] = wav
            out[m.group(1)] = (name, clip)
    return out


def _cell(out: str, stem: str, wav: np.ndarray, rate: int, caption: str) -> str:
    write_wav(os.path.join(out, stem + ".wav"), wav, rate)
    spectrogram_png(os.path.join(out, stem + ".png"), wav)
    return (f'<td><img src="{stem}.png" alt="spectrogram of {html.escape(caption)}" width="251" height="129"><br>'
            f'<audio controls preload="metadata" src="{stem}.wav"></audio><br><small>{html.escape(caption)}</small></td>')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sashimi_ar_fsdd", help="a class-conditional AR model (default: sashimi_ar_fsdd)")
    parser.add_argument("--real", default=os.path.join(ROOT, "tests", "fixtures", "fsdd"),
                        help="folder of FSDD recordings ({digit}_{speaker}_{take}.wav) (default: tests/fixtures/fsdd, "
                             "test recordings)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "samples"),
                        help="folder to write index.html and its files to (default: docs/samples)")
    parser.add_argument("--per-class", type=int, default=2, help="conditional samples per class (default: 2)")
    parser.add_argument("--unconditional", type=int, default=4, help="samples without a label (default: 4)")
    parser.add_argument("--seed", type=int, default=2026, help="sampling seed (default: 2026)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight (default: 1.0)")
    parser.add_argument("-f", "--force", action="store_true", help="replace the files of an earlier page")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.real):
        parser.error(f"--real {args.real}: no such folder")
    index = os.path.join(args.out, "index.html")
    if os.path.exists(index) and not args.force:
        parser.error(f"{index} exists; use -f to replace the page")
    model = load_model(args.model)
    if model.classes is None:
        parser.error(f"--model {args.model} is not class-conditional")
    os.makedirs(args.out, exist_ok=True)
    rate, classes = int(model.config.sample_rate), model.classes
    clf = load_classifier("fsdd")
    heard_index = match_classes(classes, clf.classes)
    real = real_recordings(args.real, classes, rate, rate)

    labels = [c for c in range(len(classes)) for _ in range(args.per_class)]
    cond = model.conditional_generate(labels, seed=args.seed, progress=True, guidance=args.guidance).numpy()
    uncond = model.unconditional_generate(args.unconditional, seed=args.seed + 1, progress=True).numpy() \
        if args.unconditional else np.zeros((0, rate), dtype=np.float32)
    probs, _ = clf.predict(torch.from_numpy(np.concatenate([cond, uncond])), rate)
    heard = [f"heard as {clf.classes[int(p.argmax())]} ({float(p.max()):.0%})" for p in probs]

    rows = []
    for c, name in enumerate(classes):
        cells = []
        if name in real:
            file, clip = real[name]
            cells.append(_cell(args.out, f"real_{name}", clip, rate, f"real: {file}"))
        else:
            cells.append("<td>(no recording)</td>")
        for j in range(args.per_class):
            i = c * args.per_class + j
            hit = "" if heard_index[c] == int(probs[i].argmax()) else " (not the requested digit)"
            cells.append(_cell(args.out, f"class_{name}_{j}", cond[i], rate, heard[i] + hit))
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    free = [_cell(args.out, f"nolabel_{j}", uncond[j], rate, heard[len(cond) + j]) for j in range(len(uncond))]
    correct = sum(heard_index[labels[i]] == int(probs[i].argmax()) for i in range(len(labels)))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sashimi: {html.escape(args.model)} samples</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:6px;vertical-align:top;
text-align:center}}th{{font-size:1.5em}}img{{image-rendering:pixelated;border:1px solid #ccc}}small{{color:#444}}</style>
</head><body>
<h1>{html.escape(args.model)}: say the digit</h1>
<p>Class-conditional autoregressive SaShiMi trained on the Free Spoken Digit Dataset (8 kHz; CC BY-SA 4.0).
Each row: one real test recording (never trained on), then {args.per_class} samples generated for that digit
(<code>model.conditional_generate</code>, seed {args.seed}, guidance {args.guidance:g}); below, samples without a label. Under each clip,
what the bundled digit classifier hears: {correct} of {len(labels)} conditional samples here are heard as the
requested digit. Spectrograms: 0-4 kHz, log power. Made by <code>benchmarks/fsdd_samples_page.py</code>.</p>
<table><tr><th>digit</th><th>real</th>{''.join(f'<th>sample {j + 1}</th>' for j in range(args.per_class))}</tr>
{chr(10).join(rows)}
</table>
<h2>Without a label</h2>
<table><tr>{''.join(free)}</tr></table>
</body></html>
"""
    with open(index, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"wrote {index}: {len(labels)} conditional samples ({correct} heard as requested), {len(free)} without a "
          f"label, {len(real)} real recordings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
