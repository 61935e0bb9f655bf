"""``sashimi eval``: score audio with a digit classifier: FID, IS, mIS, AM, and a digit histogram.

    sashimi eval samples/ --reference data/fsdd-train.csv
    sashimi eval --model runs/fsdd/ckpt_00010000.pt --n 512 --reference data/fsdd-train.csv --ar-filter
    sashimi eval samples/sashimi/ --reference sc09/train --test-set sc09/test --classifier sc09_resnext --threshold

SAMPLES and --reference are folders (searched recursively for audio files) or CSV files with a
'path' column (as 'sashimi split' writes). Instead of SAMPLES, --model NAME generates --n
samples first (a pretrained name, checkpoint path or URL). The table has one row for the
samples and one for the reference set scored against itself (the ceiling: its FID is 0 by
definition; score a held-out real set as SAMPLES for the paper's "real data" row).

Each clip is scored on its first second. --ar-filter keeps the samples between the 40th and
95th percentiles of their own log-likelihood under --model (the paper's protocol for
autoregressive models). --save-reference FILE.npz caches what the reference contributes
(class probabilities, feature mean and covariance); pass that file as --reference later.
With --json, a metric that is infinite (e.g. mIS when probabilities are exactly 0) is null.

--classifier sc09_resnext is the SaShiMi paper's classifier (the authors' resnext.pth, downloaded
once); with it, scoring follows their test_speech_commands.py: folders list their .wav files in the
authors' order (class subfolders zero..nine, else the folder's own files, in natural order), IS is
--is-variant sashimi-repo, --threshold is their likelihood-window protocol, --test-set adds their
"test" row. See docs/paper-evaluation.md.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import time

from sashimi.cli import CLIError, eval_paper, eval_table
from sashimi.cli.common import (AR_ONLY, load_cli_model, model_kind, one_line_errors, parse_number, plain,
                                resolve_device, write_wavs)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.description, parser.formatter_class = plain(__doc__), argparse.RawDescriptionHelpFormatter
    parser.add_argument("samples", nargs="?", metavar="SAMPLES", help="folder or CSV of audio files to score")
    parser.add_argument("--reference", required=True, metavar="REF",
                        help="real audio: a folder, a CSV with a 'path' column, or a .npz from --save-reference")
    parser.add_argument("--classifier", default="fsdd",
                        help="'fsdd' (bundled), 'sc09_resnext' (the SaShiMi paper's, downloaded once), a classifier "
                             "folder or file, hf://owner/name, or the authors' resnext.pth (default: fsdd)")
    gen = parser.add_argument_group("generating the samples")
    gen.add_argument("--model", default=None,
                     help="generate the samples with this model (name, checkpoint or URL); with SAMPLES, the "
                          "model whose likelihood --ar-filter uses")
    gen.add_argument("--n", default=None, help="samples to generate (default: 512; with --conditional: 50 per class)")
    gen.add_argument("--conditional", action="store_true",
                     help="class-conditional models: --n samples of each class, and the classifier's accuracy "
                          "against the requested classes with a confusion matrix")
    gen.add_argument("--guidance", default=None,
                     help="with --conditional: classifier-free guidance weight > 0 (default: 1.0)")
    gen.add_argument("--seconds", default=None, help="length of each sample (default: 1.0)")
    gen.add_argument("--batch-size", default=None, help="samples generated at once (default: 16)")
    gen.add_argument("--seed", default=None, help="generation seed; batch j uses seed + j (default: 0)")
    gen.add_argument("--steps", default=None, help="diffusion models: 'fast', an integer, or all steps (default)")
    gen.add_argument("--engine", default=None, choices=("auto", "fast", "eager"),
                     help="autoregressive models: generation engine (default: auto)")
    gen.add_argument("--nucleus-p", default=None, help="autoregressive models: nucleus mass in (0, 1] (default: the model's "
                     "own, else 1.0)")
    gen.add_argument("--temperature", default=None, help="autoregressive models: softmax temperature (default: the model's own, "
                     "else 1.0)")
    gen.add_argument("--save-samples", default=None, metavar="DIR", help="also write the generated samples here")
    gen.add_argument("--device", default=None,
                     help="cpu, cuda or cuda:N for the model and the classifier (default with --model: cuda if "
                          "available; scoring folders: cpu)")
    sc = parser.add_argument_group("scoring")
    sc.add_argument("--ar-filter", nargs="?", const="40,95", default=None, metavar="LOW,HIGH",
                    help="keep samples between these percentiles of their log-likelihood under --model "
                         "(default when given: 40,95)")
    sc.add_argument("--is-variant", default=None, choices=("standard", "sashimi-repo"),
                    help="'sashimi-repo': the IS the paper's authors computed (see sashimi.eval.inception_score); "
                         "default: sashimi-repo with the paper's classifier, else standard")
    sc.add_argument("--mis-pairs", default="10000", help="random pairs for mIS, or 'all' (default: 10000)")
    sc.add_argument("--save-reference", default=None, metavar="FILE.npz", help="cache the reference's statistics")
    eval_paper.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


# ---- validation: everything cheap, before any audio is read or generated --------------------------
def _check_args(args) -> dict:
    if args.samples is None and args.model is None:
        raise CLIError("give SAMPLES (a folder or CSV of audio files) or --model to generate them")
    if args.samples is not None and args.model is not None and args.ar_filter is None:
        raise CLIError("--model with SAMPLES is only used by --ar-filter; give one or the other")
    if args.ar_filter is not None and args.model is None:
        raise CLIError("--ar-filter needs --model: the autoregressive model whose likelihood ranks the samples")
    opts = {"generate": args.samples is None, "engine": args.engine, "guidance": 1.0}
    if args.conditional and args.model is None:
        raise CLIError("--conditional needs --model: a class-conditional model to generate each class with")
    if args.guidance is not None and not args.conditional:
        raise CLIError("--guidance applies with --conditional")
    if args.guidance is not None:
        opts["guidance"] = parse_number(args.guidance, float, "guidance", low=0, low_open=True)
    if args.conditional and args.ar_filter is not None:
        raise CLIError("--conditional and --ar-filter do not combine (the filter would unbalance the classes)")
    if opts["generate"]:
        opts["n"] = parse_number(args.n or ("50" if args.conditional else "512"), int, "n",
                                 low=1 if args.conditional else 2)
        opts["seconds"] = parse_number(args.seconds or "1.0", float, "seconds", low=0, low_open=True)
        opts["batch"] = parse_number(args.batch_size or "16", int, "batch-size", low=1)
        opts["seed"] = parse_number(args.seed or "0", int, "seed", low=0)
        from sashimi.sampling import MIN_TEMPERATURE

        # None: the model's own default (config.sampling), else the library's
        opts["nucleus_p"] = None if args.nucleus_p is None else \
            parse_number(args.nucleus_p, float, "nucleus-p", low=0, high=1, low_open=True)
        opts["temperature"] = None if args.temperature is None else \
            parse_number(args.temperature, float, "temperature", low=MIN_TEMPERATURE)
        if args.steps is not None and args.steps != "fast":
            opts["steps"] = parse_number(args.steps, int, "steps", low=1)
        else:
            opts["steps"] = args.steps
    else:
        generating = ("n", "seconds", "batch_size", "seed", "steps", "engine", "nucleus_p", "temperature",
                      "save_samples")
        given = [f"--{name.replace('_', '-')}" for name in generating if getattr(args, name) is not None]
        if given:
            raise CLIError(f"{given[0]} applies when generating with --model, not to SAMPLES")
    if args.ar_filter is not None:
        parts = args.ar_filter.split(",")
        if len(parts) != 2:
            raise CLIError(f"--ar-filter must be LOW,HIGH percentiles, e.g. 40,95, got {args.ar_filter!r}")
        low, high = (parse_number(p, float, "ar-filter", low=0, high=100) for p in parts)
        if low >= high:
            raise CLIError(f"--ar-filter: LOW must be below HIGH, got {args.ar_filter!r}")
        opts["ar_filter"] = (low, high)
    opts["mis_pairs"] = None if args.mis_pairs == "all" else parse_number(args.mis_pairs, int, "mis-pairs", low=1)
    eval_paper.check_arguments(args, opts)
    path = args.save_reference
    if path is not None:
        if not path.endswith(".npz"):
            raise CLIError(f"--save-reference must name a .npz file, got {path}")
        if os.path.exists(path) and not args.force:
            raise CLIError(f"{path} exists; use -f to overwrite")
    return opts


def _sample_paths(args, n: int) -> list[str]:
    if args.save_samples is None:
        return []
    if os.path.exists(args.save_samples) and not os.path.isdir(args.save_samples):
        raise CLIError(f"--save-samples {args.save_samples} exists and is not a directory")
    width = max(3, len(str(n - 1)))
    paths = [os.path.join(args.save_samples, f"sample_{i:0{width}d}.wav") for i in range(n)]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.force:
        raise CLIError(f"{existing[0]} exists ({len(existing)} of {n} files); use -f to overwrite")
    return paths


def _list(source: str, flag: str) -> list[str]:
    from sashimi.errors import SashimiError
    from sashimi.data.datasets import list_audio_files

    try:
        files = list_audio_files(source)
    except (FileNotFoundError, SashimiError) as e:
        raise CLIError(f"{flag}: {e}") from e
    if len(files) < 2:
        raise CLIError(f"{flag}: {source} holds {len(files)} audio file; FID needs at least 2")
    return files


# ---- audio -> classifier outputs ---------------------------------------------------------------------
def _classify_files(classifier, files: list[str], what: str, quiet: bool):
    """Read files (each at its own rate) and classify them on their first second, in file order."""
    import torch

    from sashimi.data.audio import AudioError, read_audio

    by_rate: dict[int, list[tuple[int, torch.Tensor]]] = {}
    it = files if quiet else _tqdm(files, f"reading {what}", "file")
    for i, path in enumerate(it):
        try:
            wav, rate = read_audio(path, mono=True)
        except (AudioError, FileNotFoundError) as e:
            raise CLIError(str(e)) from e
        by_rate.setdefault(rate, []).append((i, wav[:rate]))
    probs = [None] * len(files)
    feats = [None] * len(files)
    for rate, items in by_rate.items():
        wavs = torch.zeros(len(items), rate)
        for j, (_, w) in enumerate(items):
            wavs[j, :w.numel()] = w
        p, f = classifier.predict(wavs, rate, progress=not quiet)
        for j, (i, _) in enumerate(items):
            probs[i], feats[i] = p[j], f[j]
    return torch.stack(probs), torch.stack(feats)


def _tqdm(it, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, unit=unit, dynamic_ncols=True)


def _generate(model, kind: str, opts: dict, quiet: bool):
    import torch

    rate = int(model.config.sample_rate)
    length = max(1, round(opts["seconds"] * rate))
    out = []
    for j, first in enumerate(range(0, opts["n"], opts["batch"])):
        count = min(opts["batch"], opts["n"] - first)
        kw = dict(length=length, seed=opts["seed"] + j, progress=not quiet)
        if kind == "diffwave":
            kw["steps"] = opts["steps"]
        else:
            kw.update(engine=opts["engine"] or "auto", nucleus_p=opts["nucleus_p"], temperature=opts["temperature"])
        # SashimiError: one line (main)
        if opts.get("labels") is not None:
            wav = model.conditional_generate(opts["labels"][first:first + count], guidance=opts["guidance"], **kw)
        else:
            wav = model.unconditional_generate(count, **kw)
        out.append(wav.float().cpu())
    return torch.cat(out), rate


def _log_likelihoods(model, wavs, lengths, quiet: bool) -> list[float]:
    """Minus the mean NLL (nats per sample) of each waveform under an AR model.

    Args:
        wavs: (N, L) waveforms at the model's rate, zero-padded past ``lengths``.
        lengths: (N,) int64 valid lengths.
    """
    import torch

    from sashimi.eval.likelihood import nats_per_sample

    wavs = wavs.clamp(-1, 1)
    batch = 16
    if wavs.size(1) <= model.config.l_max:  # one convolution pass per batch
        starts = range(0, wavs.size(0), batch)
        it = starts if quiet else _tqdm(starts, "likelihoods", "batch")
        nll = [model.nll(wavs[s:s + batch].to(model.device), lengths[s:s + batch]).cpu() for s in it]
        return (-torch.cat(nll)).tolist()
    it = range(wavs.size(0)) if quiet else _tqdm(range(wavs.size(0)), "likelihoods", "sample")
    with torch.no_grad():  # longer than the model's kernels: the recurrent engine, clip by clip
        return [-nats_per_sample(model, wavs[i, :int(lengths[i])]) for i in it]


# ---- the command ---------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as cleanup:  # claims on output files, released on the way out
        return _run(args, cleanup)


def _run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    opts = _check_args(args)
    sample_files = None if opts["generate"] else _list(args.samples, "SAMPLES")
    ref_is_cache = args.reference.endswith(".npz")
    if ref_is_cache and args.save_reference:
        raise CLIError("--reference is already a .npz cache; --save-reference needs audio files")
    ref_files = None if ref_is_cache else _list(args.reference, "--reference")
    test_files = None if args.test_set is None else _list(args.test_set, "--test-set")
    if ref_is_cache and not os.path.isfile(args.reference):
        raise CLIError(f"--reference: no such file: {args.reference}")
    # --conditional: the files are claimed once the model says how many classes (n per class)
    save_paths = _sample_paths(args, opts["n"]) if opts["generate"] and not args.conditional else []
    outputs = _claim_outputs(args, save_paths, cleanup)  # before any reading, generating or scoring

    from sashimi.eval import load_classifier
    from sashimi.eval.score import Reference, likelihood_filter, score_set
    from sashimi.persistence.hf import HubDependencyError

    try:
        classifier = load_classifier(args.classifier, pad_mode=args.stft_padding, progress=not args.quiet)
    except (ValueError, OSError, HubDependencyError) as e:  # OSError: also an hf:// classifier not downloaded
        raise CLIError(f"--classifier: {e}") from e
    clf_id = _classifier_id(args.classifier, classifier.pad_mode)
    paper = eval_paper.is_paper_protocol(classifier)
    is_variant = args.is_variant or ("sashimi-repo" if paper else "standard")
    ordered = paper or args.threshold  # the authors' file order (it decides IS halves, mIS pairs, thresholds)
    if sample_files is not None:
        sample_files = eval_paper.relist(args.samples, sample_files, "SAMPLES", classifier, ordered)
    if ref_files is not None:
        ref_files = eval_paper.relist(args.reference, ref_files, "--reference", classifier, ordered)
    if test_files is not None:
        test_files = eval_paper.relist(args.test_set, test_files, "--test-set", classifier, ordered)
    model = kind = None
    if args.model is None and args.device is not None:  # scoring folders: the classifier on that device
        classifier.to(resolve_device(args.device))
    if args.model is not None:
        device = resolve_device(args.device)
        model = load_cli_model(args.model, device)
        kind = model_kind(model)
        if "ar_filter" in opts and kind != "ar":
            raise CLIError(f"--ar-filter needs an autoregressive model; {args.model} is a diffusion model")
        if kind == "ar" and opts.get("steps") is not None:
            raise CLIError(f"--steps applies to diffusion models only; {args.model} is autoregressive")
        if args.conditional:
            from sashimi.eval import match_classes

            if model.classes is None:
                raise CLIError(f"--conditional needs a class-conditional model; {args.model} has no classes")
            try:
                opts["classifier_index"] = match_classes(model.classes, classifier.classes)
            except ValueError as e:
                raise CLIError(f"--conditional: {e}") from e
            per_class = opts["n"]
            opts["labels"] = [c for c in range(len(model.classes)) for _ in range(per_class)]
            opts["n"] = len(opts["labels"])
            save_paths = _sample_paths(args, opts["n"])
            outputs.claim(save_paths)  # before generating (released with the others on the way out)
        ar_only = [f"--{name.replace('_', '-')}" for name in AR_ONLY if getattr(args, name, None) is not None]
        if kind == "diffwave" and ar_only:
            raise CLIError(f"{ar_only[0]} applies to autoregressive models only; {args.model} is a diffusion model")
        classifier.to(device)

    start = time.perf_counter()
    if ref_is_cache:
        try:
            reference = Reference.load(args.reference, clf_id)
        except ValueError as e:
            raise CLIError(f"--reference: {e}") from e
        ref_source = f"{args.reference} (cached)"
    else:
        reference = Reference.from_outputs(*_classify_files(classifier, ref_files, "reference", args.quiet), clf_id)
        ref_source = args.reference
        if args.save_reference:
            outputs.publish(args.save_reference, functools.partial(_save_reference, reference))

    if opts["generate"]:
        wavs, rate = _generate(model, kind, opts, args.quiet)
        if save_paths:
            write_wavs(outputs, save_paths, wavs, rate)
        probs, feats = classifier.predict(wavs, rate, progress=not args.quiet)
        source = f"{args.model}, {opts['n']} samples"
    else:
        probs, feats = _classify_files(classifier, sample_files, "samples", args.quiet)
        source = args.samples
    n_total = probs.shape[0]
    if "ar_filter" in opts:
        import torch

        if opts["generate"]:
            lengths = torch.full((wavs.size(0),), wavs.size(1), dtype=torch.long)
        else:
            from sashimi.data.audio import read_audio

            rate = int(model.config.sample_rate)
            wavs, lengths = _stack([read_audio(p, rate, mono=True)[0] for p in sample_files])
        keep = likelihood_filter(_log_likelihoods(model, wavs, lengths, args.quiet), *opts["ar_filter"])
        if keep.sum() < 2:
            raise CLIError(f"--ar-filter keeps {int(keep.sum())} of {n_total} samples; FID needs at least 2")
        probs, feats = probs[keep], feats[keep]
        low, high = opts["ar_filter"]
        source += f"; kept {int(keep.sum())} between likelihood percentiles {low:g}-{high:g}"
    threshold = None
    if args.threshold:
        probs, feats, source, threshold = eval_paper.threshold(
            probs, feats, opts, None if test_files is None else len(test_files), source)

    kw = dict(is_variant=is_variant, mis_pairs=opts["mis_pairs"])
    rows = {"samples": dict(source=source, **score_set(probs, feats, reference, **kw)),
            "reference": dict(source=ref_source, **score_set(reference.probs, None, reference, **kw))}
    if test_files is not None:
        test_probs, test_feats = _classify_files(classifier, test_files, "test set", args.quiet)
        rows["test"] = dict(source=args.test_set, **score_set(test_probs, test_feats, reference, **kw))
    if opts.get("labels") is not None:
        import torch

        from sashimi.eval import label_accuracy

        rows["conditional"] = dict(model_classes=model.classes, per_class_n=opts["n"] // len(model.classes),
                                   **label_accuracy(probs, torch.tensor(opts["labels"]), opts["classifier_index"],
                                                    len(classifier.classes)))
    result = dict(classifier=clf_id, classes=list(classifier.classes), is_variant=is_variant,
                  mis_pairs=opts["mis_pairs"], stft_padding=classifier.pad_mode,
                  protocol="sashimi-paper" if paper else "default", seconds=round(time.perf_counter() - start, 1),
                  **rows)
    if threshold is not None:
        result["threshold"] = threshold
    print(json.dumps(eval_table.finite_or_null(result), indent=2) if args.json else eval_table.table(result))
    return 0


def _classifier_id(spec: str, pad_mode: str = "reflect") -> str:
    """The classifier's name plus the start of its file's hash, and the front end's STFT padding
    when it is not the default (what --reference caches are keyed on)."""
    return _classifier_file_id(spec) + ("" if pad_mode == "reflect" else f"+{pad_mode}")


def _classifier_file_id(spec: str) -> str:
    from sashimi.persistence.download import sha256_file
    from sashimi.pretrained.registry import BUNDLED_CLASSIFIERS, DOWNLOADED_CLASSIFIERS

    if spec in DOWNLOADED_CLASSIFIERS and not os.path.exists(spec):
        from sashimi.eval.classifier import downloaded_classifier_path

        return f"{spec}:{sha256_file(downloaded_classifier_path(spec))[:12]}"
    if spec in BUNDLED_CLASSIFIERS:
        return f"{spec}:{BUNDLED_CLASSIFIERS[spec][1]['model.safetensors'][:12]}"
    if os.path.isdir(spec):  # a model folder: its weights' digest, from its config.json
        from sashimi.persistence.folder import WEIGHTS_FILE, read_config

        return f"{os.path.basename(os.path.normpath(spec))}:{read_config(spec)['sha256'][WEIGHTS_FILE][:12]}"
    if spec.startswith("hf://"):
        return spec
    return f"{os.path.basename(spec)}:{sha256_file(spec)[:12]}"


def _claim_outputs(args, save_paths: list[str], cleanup: contextlib.ExitStack):
    """Create --save-samples and claim every output file (:class:`sashimi.persistence.outputs.OutputFiles`):
    an unwritable place, or a file another run is writing, is refused before the work."""
    from sashimi.cli.common import prepare_output_dir, remove_if_empty
    from sashimi.persistence.outputs import OutputFiles

    if args.save_samples is not None and args.model is not None and args.samples is None:
        cleanup.callback(remove_if_empty, prepare_output_dir(args.save_samples, "--save-samples"))
    paths = save_paths + ([args.save_reference] if args.save_reference else [])
    return cleanup.enter_context(OutputFiles(paths, args.force))


def _save_reference(reference, path: str) -> None:
    with open(path, "wb") as f:  # a file object: numpy would append .npz to the name of the .part file
        reference.save(f)


def _stack(wavs):
    """Waveforms of any lengths -> (N, max L) zero-padded, and their lengths (N,)."""
    import torch

    out = torch.zeros(len(wavs), max(w.numel() for w in wavs))
    for i, w in enumerate(wavs):
        out[i, :w.numel()] = w
    return out, torch.tensor([w.numel() for w in wavs])
