"""The `nstlib` command line: `nstlib stylize ...` and `nstlib demo`.

User errors (bad files, bad options) print one line on stderr and exit with code 2, never a
traceback. Outputs are checked before the first step, written atomically and never over an input;
an existing output (also one that appears during the run) is replaced only with --force.
This module imports torch only inside `main`, so Ctrl-C while it loads still exits with code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from nstlib.errors import MemoryLimitError, NonFiniteLossError, NstlibError, OutputError
from nstlib.files import check_output_path, same_file, show

if TYPE_CHECKING:
    from nstlib.optimize import StylizeResult
    from nstlib.weights import Weights

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (not the usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    from nstlib.optimize import DEVICES, OPTIMIZERS
    from nstlib.weights import WEIGHTS_CHOICES

    p.add_argument("--size", type=_positive_int, help="long side of the output in pixels")
    p.add_argument("--steps", type=_positive_int, help="optimiser iterations")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    p.add_argument("--weights", default="imagenet",
                   help=f"network weights: {', '.join(WEIGHTS_CHOICES)} or a .pth path (imagenet: the best available; "
                        "see nstlib.weights)")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise init (--init noise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--save-partial", action="store_true",
                   help="if interrupted (Ctrl-C) or stopped by NaN, still write the image so far")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (imports the modules that define the choices: torch loads here)."""
    from nstlib import color
    from nstlib.blend import BLEND_METHODS
    from nstlib.optimize import DEFAULT_CONTENT_WEIGHT, DEFAULT_STYLE_WEIGHT, DEFAULT_TV_WEIGHT, INITS
    from nstlib.pyramid import SQRT2

    parser = _Parser(prog="nstlib", description="Neural style transfer (Gatys et al.) with VGG19.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    st = sub.add_parser("stylize", help="stylize a content image with one or more style images")
    st.add_argument("content", help="content image")
    st.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    st.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    _add_common(st)
    st.add_argument("--lr", type=float, help="learning rate (Adam default 0.02, L-BFGS 1)")
    st.add_argument("--init", choices=INITS, default="content")
    st.add_argument("--content-weight", type=float, default=DEFAULT_CONTENT_WEIGHT)
    st.add_argument("--style-weight", type=float, default=DEFAULT_STYLE_WEIGHT)
    st.add_argument("--tv-weight", type=float, default=DEFAULT_TV_WEIGHT)
    st.add_argument("--blend", choices=BLEND_METHODS, default="gram", help="how to combine several styles")
    st.add_argument("--blend-weights", type=float, nargs="+", help="one weight per style image")
    st.add_argument("--style-scale", type=float, default=1.0,
                    help="style image size relative to the content (bigger: larger brush strokes)")
    st.add_argument("--preserve-color", choices=color.PRESERVE_COLOR,
                    help="keep the content's colours: transfer luminance only, or match the style's colours first")
    st.add_argument("--color-match", choices=color.COLOR_MATCH_METHODS, default="pca",
                    help="how --preserve-color match recolours the style (default pca)")
    st.add_argument("--coarse-to-fine", choices=("auto", "on", "off"), default="auto",
                    help="stylize on a pyramid from small to --size (auto: on from 512 px)")
    st.add_argument("--pyramid-start", type=_positive_int, help="smallest pyramid size in pixels (default 128)")
    st.add_argument("--pyramid-ratio", type=float, default=SQRT2, help="size ratio between pyramid scales (√2)")
    st.add_argument("--mask", nargs="+", metavar="MASK",
                    help="one mask image per style: white where that style goes, black for none")
    st.add_argument("--gif", help="also write a progress animation here (a .gif file)")
    _add_output_flags(st)

    demo = sub.add_parser("demo", help="stylize the bundled astronaut with the bundled stained-glass style")
    demo.add_argument("--out", default="nstlib-demo", help="output folder (default: ./nstlib-demo)")
    _add_common(demo)
    _add_output_flags(demo)
    return parser


def _say(text: str) -> None:
    """Print a report line on stdout; if the reader has gone (a closed pipe), carry on without it."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):  # send the rest (and the exit-time flush) nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _report(result: StylizeResult, out: Path, gif: Path | None) -> None:
    final = result.final
    _say(f"wrote {show(out)} ({result.image.shape[-1]}x{result.image.shape[-2]}) in {result.seconds:.1f} s; "
         f"loss {result.history[0]['total']:.4g} -> {final['total']:.4g}")
    if gif is not None:
        _say(f"wrote {show(gif)} ({len(result.frames)} frames)")


def _save_partial(result: StylizeResult, out: Path, why: str, args: argparse.Namespace) -> None:
    """Write an unfinished result (marked in its PNG text chunk "nstlib:status") only with --save-partial."""
    if args.save_partial:
        result.save(out, overwrite=args.force)
        print(f"nstlib: {why}; wrote the partial result to {show(out)} (marked nstlib:status={result.status!r})",
              file=sys.stderr)
    else:
        print(f"nstlib: {why}; nothing written (use --save-partial to keep the partial result)", file=sys.stderr)


def _check_outputs(
    output: str | os.PathLike, gif: str | os.PathLike | None, inputs: Sequence[str], force: bool
) -> tuple[Path, Path | None]:
    """Check the image and animation paths before any work: extension, existence, folder, free space."""
    from nstlib.images import FORMATS

    out = check_output_path(output, inputs, overwrite=force, extensions=FORMATS)
    if gif is None:
        return out, None
    if same_file(Path(gif), out):
        raise OutputError(f"--gif {show(gif)}: is the same file as the output image; give the animation its own "
                          ".gif name")
    return out, check_output_path(gif, inputs, overwrite=force, extensions={".gif"})


def _run_and_save(
    args: argparse.Namespace, out: Path, gif: Path | None, run: Callable[[], StylizeResult]
) -> int:
    """Run; write the image (and animation) if complete, a partial result only with --save-partial."""
    try:
        result = run()
    except (NonFiniteLossError, MemoryLimitError) as e:
        if e.result is None:  # refused before starting: nothing to save
            raise
        _save_partial(e.result, out, str(e), args)
        return EXIT_USER_ERROR
    if result.interrupted:
        _save_partial(result, out, result.status, args)
        return EXIT_INTERRUPTED
    result.save(out, overwrite=args.force)
    if gif is not None:
        result.save_gif(gif, overwrite=args.force)
    _report(result, out, gif)
    return 0


def _weights(args: argparse.Namespace) -> Weights:
    """Resolve --weights once, before any work, and say in one line which network and weights run."""
    from nstlib.weights import resolve_weights

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = resolve_weights(args.weights, progress=not args.quiet)
    for warning in caught:  # the fallback to random weights: loud, but one line, not a warnings traceback
        print(f"WARNING: {warning.message}", file=sys.stderr)
    _say(f"network: {weights.describe()}")
    return weights


def run_stylize(args: argparse.Namespace) -> int:
    from nstlib.optimize import stylize

    inputs = [args.content, *args.styles, *(args.mask or [])]
    out, gif = _check_outputs(args.output, args.gif, inputs, args.force)
    weights = _weights(args)
    steps = args.steps or 300
    return _run_and_save(args, out, gif, lambda: stylize(
        args.content, args.styles, size=args.size, steps=steps, optimizer=args.optimizer, lr=args.lr,
        init=args.init, content_weight=args.content_weight, style_weight=args.style_weight,
        tv_weight=args.tv_weight, blend=args.blend, blend_weights=args.blend_weights, weights=weights,
        style_scale=args.style_scale, preserve_color=args.preserve_color, color_match=args.color_match,
        coarse_to_fine={"on": True, "off": False}.get(args.coarse_to_fine, "auto"),
        pyramid_start=args.pyramid_start, pyramid_ratio=args.pyramid_ratio, masks=args.mask,
        device=args.device, seed=args.seed, progress=not args.quiet,
        frame_every=max(1, steps // 30) if gif else 0,
    ))


def _demo_folder(path: str) -> Path:
    """The demo's output folder, created if missing; a file or an impossible place is `OutputError`."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--out {show(folder)}: is a file, not a folder; give a folder name") from None
    except OSError as e:
        raise OutputError(f"--out {show(folder)}: cannot create this folder ({e.strerror or e}); choose another "
                          "place") from None
    return folder


def run_demo(args: argparse.Namespace) -> int:
    from nstlib.data import sample_path
    from nstlib.optimize import pick_device, stylize

    on_gpu = pick_device(args.device).type != "cpu"
    size = args.size or (512 if on_gpu else 192)
    steps = args.steps or (300 if on_gpu else 60)
    out_dir = _demo_folder(args.out)
    out, gif = _check_outputs(out_dir / "astronaut_stained_glass.png", out_dir / "astronaut_stained_glass.gif", [],
                              args.force)
    weights = _weights(args)
    _say(f"stylizing the bundled astronaut at {size}px, {steps} {args.optimizer} steps")
    return _run_and_save(args, out, gif, lambda: stylize(
        sample_path("astronaut"), sample_path("stained_glass"), size=size, steps=steps, optimizer=args.optimizer,
        weights=weights, device=args.device, seed=args.seed, progress=not args.quiet,
        frame_every=max(1, steps // 30),
    ))


def _one_line(text: str) -> str:
    """A message as one line: line breaks (e.g. from a file name) escaped."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The `nstlib` command. Ctrl-C at any moment, even while torch is still loading, exits with 130
    and one line; a stdout that cannot encode a file name or has been closed causes no traceback."""
    with contextlib.suppress(AttributeError, ValueError):  # not a text stream: leave it alone
        sys.stdout.reconfigure(errors="backslashreplace")
    start = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        code = run_stylize(args) if args.command == "stylize" else run_demo(args)
    except NstlibError as e:
        print(f"nstlib: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside the optimisation loop (loading torch or images, saving)
        print("nstlib: interrupted; no partial output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if code == 0:
        _say(f"done in {time.perf_counter() - start:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
