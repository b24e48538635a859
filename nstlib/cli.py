"""The `nstlib` command line: `nstlib stylize ...` and `nstlib demo`.

User errors (bad files, bad options) print one line on stderr and exit with code 2, never a
traceback. Outputs are written atomically and never over an input; an existing output is
replaced only with --force.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from nstlib import color
from nstlib.blend import BLEND_METHODS
from nstlib.errors import MemoryLimitError, NonFiniteLossError, NstlibError
from nstlib.images import check_output_path
from nstlib.optimize import (
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TV_WEIGHT,
    DEVICES,
    INITS,
    OPTIMIZERS,
    StylizeResult,
    pick_device,
    stylize,
)
from nstlib.pyramid import SQRT2
from nstlib.weights import WEIGHTS_CHOICES, Weights, resolve_weights

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
    p.add_argument("--size", type=_positive_int, help="long side of the output in pixels")
    p.add_argument("--steps", type=_positive_int, help="optimiser iterations")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="lbfgs")
    p.add_argument("--weights", default="imagenet",
                   help=f"network weights: {', '.join(WEIGHTS_CHOICES)} or a .pth path (imagenet: the best available; "
                        "see nstlib.weights)")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise init (--init noise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
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
    st.add_argument("--gif", help="also write a progress animation here")
    st.add_argument("--force", action="store_true", help="overwrite existing output files")
    st.add_argument("--save-partial", action="store_true",
                    help="if interrupted (Ctrl-C) or stopped by NaN, still write the image so far")

    demo = sub.add_parser("demo", help="stylize the bundled astronaut with the bundled stained-glass style")
    demo.add_argument("--out", default="nstlib-demo", help="output folder (default: ./nstlib-demo)")
    _add_common(demo)
    return parser


def _report(result: StylizeResult, out: Path, gif: Path | None) -> None:
    final = result.final
    print(f"wrote {out} ({result.image.shape[-1]}x{result.image.shape[-2]}) in {result.seconds:.1f} s; "
          f"loss {result.history[0]['total']:.4g} -> {final['total']:.4g}")
    if gif is not None:
        print(f"wrote {gif} ({len(result.frames)} frames)")


def _save_partial(result: StylizeResult, out: Path, why: str, allowed: bool) -> None:
    """Write an unfinished result (marked in its PNG text chunk "nstlib:status") only if `allowed`."""
    if allowed:
        result.save(str(out))
        print(f"nstlib: {why}; wrote the partial result to {out} (marked nstlib:status={result.status!r})",
              file=sys.stderr)
    else:
        print(f"nstlib: {why}; nothing written (use --save-partial to keep the partial result)", file=sys.stderr)


def _weights(args: argparse.Namespace) -> Weights:
    """Resolve --weights once, before any work, and say in one line which network and weights run."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = resolve_weights(args.weights, progress=not args.quiet)
    for warning in caught:  # the fallback to random weights: loud, but one line, not a warnings traceback
        print(f"WARNING: {warning.message}", file=sys.stderr)
    print(f"network: {weights.describe()}")
    return weights


def run_stylize(args: argparse.Namespace) -> int:
    inputs = [args.content, *args.styles, *(args.mask or [])]
    out = check_output_path(args.output, inputs, overwrite=args.force)
    gif = check_output_path(args.gif, inputs, overwrite=args.force) if args.gif else None
    steps = args.steps or 300
    try:
        result = stylize(
            args.content, args.styles, size=args.size, steps=steps, optimizer=args.optimizer, lr=args.lr,
            init=args.init, content_weight=args.content_weight, style_weight=args.style_weight,
            tv_weight=args.tv_weight, blend=args.blend, blend_weights=args.blend_weights, weights=_weights(args),
            style_scale=args.style_scale, preserve_color=args.preserve_color, color_match=args.color_match,
            coarse_to_fine={"on": True, "off": False}.get(args.coarse_to_fine, "auto"),
            pyramid_start=args.pyramid_start, pyramid_ratio=args.pyramid_ratio, masks=args.mask,
            device=args.device, seed=args.seed, progress=not args.quiet,
            frame_every=max(1, steps // 30) if gif else 0,
        )
    except (NonFiniteLossError, MemoryLimitError) as e:
        if e.result is None:  # refused before starting: nothing to save
            raise
        _save_partial(e.result, out, str(e), args.save_partial)
        return EXIT_USER_ERROR
    if result.interrupted:
        _save_partial(result, out, result.status, args.save_partial)
        return EXIT_INTERRUPTED
    result.save(str(out))
    if gif is not None:
        result.save_gif(str(gif))
    _report(result, out, gif)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    on_gpu = pick_device(args.device).type != "cpu"
    size = args.size or (512 if on_gpu else 192)
    steps = args.steps or (300 if on_gpu else 60)
    weights = _weights(args)
    from nstlib.data import sample_path

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out, gif = out_dir / "astronaut_stained_glass.png", out_dir / "astronaut_stained_glass.gif"
    print(f"stylizing the bundled astronaut at {size}px, {steps} {args.optimizer} steps")
    result = stylize(
        sample_path("astronaut"), sample_path("stained_glass"), size=size, steps=steps, optimizer=args.optimizer,
        weights=weights, device=args.device, seed=args.seed, progress=not args.quiet,
        frame_every=max(1, steps // 30),
    )
    result.save(str(out))
    result.save_gif(str(gif))
    _report(result, out, gif)
    return EXIT_INTERRUPTED if result.interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        code = run_stylize(args) if args.command == "stylize" else run_demo(args)
    except NstlibError as e:
        print(f"nstlib: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside the optimisation loop (loading, saving)
        print("nstlib: interrupted; no partial output written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if code == 0:
        print(f"done in {time.perf_counter() - start:.1f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
