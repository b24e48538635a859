"""The `nstlib` command line: `nstlib stylize ...` and `nstlib demo`. A user error is one stderr line and exit code 2;
everything is checked before the weights are looked for; no output is written over an input, nor over a file without
--force. Torch is imported only inside `main`, so that a signal while it loads is handled too."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from nstlib.core.errors import NstlibError, OutputError, RunStoppedError
from nstlib.io.files import check_output_path, same_file, show

if TYPE_CHECKING:
    from nstlib.core.settings import Settings
    from nstlib.engine.runtime import Runtime

EXIT_USER_ERROR = 2
#: What ends the command as Ctrl-C does (SIGTERM: `timeout`, `docker stop`; SIGHUP: a closed terminal): exit 128 + N.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GIF_FRAMES = 30  # about this many frames in the progress animation


class _Signals:
    """The command's one signal policy, for `SIGNALS` alike: the first signal ends the work as Ctrl-C does (a run keeps
    its image so far, which --save-partial writes); once a result is in hand (`holding`) it waits until the files being
    written are complete (`written`). Later signals are ignored: the command is ending."""

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        self.received: int | None = None
        self.held = self.pending = False
        self.written: list[Path] = []
        main = threading.current_thread() is threading.main_thread()  # handlers can only be set there
        # An ignored signal stays ignored: `nohup` ignores SIGHUP, a background job of a script SIGINT.
        saved = {number: signal.signal(number, self.handle) for number in SIGNALS
                 if main and signal.getsignal(number) is not signal.SIG_IGN}
        try:
            yield
        finally:
            for number, handler in saved.items():
                signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def handle(self, number: int, frame: object) -> None:
        if self.received is None:
            self.received = number
            self.pending = self.held
            if not self.held:
                raise KeyboardInterrupt

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """A result is in hand: a signal now is raised only once the block, its writes, is done (a flag, not a signal
        mask: the OS may hand the signal to one of torch's threads, which a mask on this one does not cover)."""
        self.held = True
        try:
            yield
        finally:
            self.held = False
        if self.pending:
            raise KeyboardInterrupt

    def name_and_exit_code(self) -> tuple[str, int]:
        """The signal's name and the command's exit code, 128 + its number (Ctrl-C's if none came)."""
        number = self.received or signal.SIGINT
        return signal.Signals(number).name, 128 + number


_signals = _Signals()


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: How the command line spells the values True and False of a choice (--coarse-to-fine on|off|auto).
_ON_OFF: dict[object, str] = {True: "on", False: "off"}


def _add_common(p: argparse.ArgumentParser) -> None:
    """The options both commands take: one per `nstlib.Settings` field, with the field's help, choices and default
    (options not given keep it), then the weights, the device and the flags."""
    from nstlib.core.settings import Settings
    from nstlib.engine.runtime import DEVICES
    from nstlib.io.weights import WEIGHTS_CHOICES

    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = f" (default {default:.4g})" if isinstance(default, float) else "" if default is None else \
            f" (default {' '.join(f'{k}={v:g}' for k, v in default.items())})" if isinstance(default, dict) else \
            f" (default {_ON_OFF[default] if isinstance(default, bool) else default})"
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                       help=f.metadata["help"] + shown, **_option(f))
    p.add_argument("--network-weights", "--weights", dest="network_weights", default="imagenet",
                   help=f"network weights: {', '.join(WEIGHTS_CHOICES)} or a .pth path (imagenet: the best available; "
                        "see nstlib.io.weights)")
    p.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--save-partial", action="store_true",
                   help="if interrupted (Ctrl-C) or stopped by NaN, still write the image so far")


def _option(f: dataclasses.Field) -> dict[str, Any]:
    """argparse's keywords for a `Settings` field (its annotation is a string here)."""
    choices = f.metadata.get("choices")
    if choices is not None:
        return {"choices": [_ON_OFF.get(c, c) for c in choices if c is not None]}
    if "Mapping" in f.type:
        return {"type": _layer_weight, "nargs": "+", "metavar": "LAYER[=WEIGHT]"}
    number = int if f.type.startswith("int") else float  # int, int | None; float, Weight, Sequence[float]
    return {"type": number, "nargs": "+"} if f.type.startswith("Sequence") else {"type": number}


def _layer_weight(text: str) -> tuple[str, float]:
    """One LAYER[=WEIGHT] of --content-layers / --style-layers: ("relu1_1", 1.0) for "relu1_1"."""
    name, _, weight = text.partition("=")
    try:
        return name, float(weight) if weight else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give LAYER or LAYER=WEIGHT, e.g. relu4_2=1") from None


def _settings(args: argparse.Namespace) -> tuple[Settings, Runtime]:
    """The validated `Settings` of the options given (over the demo's defaults for `demo`), and the runtime."""
    from nstlib.checks import resolve
    from nstlib.core.settings import Settings
    from nstlib.engine.runtime import Runtime

    runtime = Runtime.create(args.device)
    defaults = {"size": runtime.sizes.demo, "steps": runtime.sizes.demo_steps} if args.command == "demo" else {}
    spelled = {word: value for value, word in _ON_OFF.items()}
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)}
    given = {name: spelled.get(value, value) if isinstance(value, str) else dict(value) if name.endswith("_layers")
             else value for name, value in given.items()}
    return resolve(None, {**defaults, **given}), runtime


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (torch loads here, with the modules that define the choices)."""
    parser = _Parser(prog="nstlib", description="Neural style transfer (Gatys et al.) with VGG19.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    st = sub.add_parser("stylize", help="stylize a content image with one or more style images")
    st.add_argument("content", help="content image")
    st.add_argument("styles", nargs="+", metavar="style", help="style image(s)")
    st.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp)")
    _add_common(st)
    st.add_argument("--mask", nargs="+", default=[], metavar="MASK",
                    help="one mask image per style: white where that style goes, black for none")
    st.add_argument("--gif", help="also write a progress animation here (a .gif file)")

    demo = sub.add_parser("demo", help="stylize the bundled astronaut with the bundled stained-glass style")
    demo.add_argument("--out", default="nstlib-demo", help="output folder (default: ./nstlib-demo)")
    _add_common(demo)
    return parser


class _Forgiving:
    """stdout or stderr whose writes never raise: the first failure (a closed pipe, a full disk) drops all later output
    and points the descriptor at /dev/null, so that the exit-time flush succeeds too. A descriptor closed at the start
    (`2>&-`) is pointed there at once: no output file opened later may get its number."""

    def __init__(self, stream: TextIO | None, fd: int) -> None:
        self.stream = stream
        self.broken = stream is None  # what Python gives for a descriptor closed at the start
        if self.broken:
            try:
                os.fstat(fd)
            except OSError:  # still closed
                _point_at_devnull(fd)

    def write(self, text: str) -> int:
        if not self.broken:
            self._try(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            self._try(self.stream.flush)

    def _try(self, call: Any, *args: str) -> None:
        try:
            call(*args)
        except (OSError, ValueError):  # ValueError: a closed file
            self.broken = True
            with contextlib.suppress(OSError, ValueError):  # not a real file (no descriptor): nothing to redirect
                _point_at_devnull(self.stream.fileno())

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, ... of the real stream
        return getattr(self.stream, name)


def _point_at_devnull(fd: int) -> None:
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def run_stylize(args: argparse.Namespace, settings: Settings, runtime: Runtime) -> int:
    """Check the outputs, and the inputs at the planned size, before the weights are looked for (that may take
    seconds); run; write the image (and animation) if complete, a partial result only with --save-partial."""
    from nstlib.api import check_inputs, stylize
    from nstlib.core.objective import target_size
    from nstlib.io.images import FORMATS, check_room, peek_shape, save_gif, save_image
    from nstlib.io.weights import load_weights

    weight_file = [args.network_weights] if os.path.isfile(args.network_weights) else []  # an input too
    inputs = [args.content, *args.styles, *args.mask, *weight_file]
    out = check_output_path(args.output, inputs, overwrite=args.force, extensions=FORMATS)
    gif = None
    if args.gif is not None:
        if same_file(Path(args.gif), out):
            raise OutputError(f"--gif {show(args.gif)}: is the same file as the output image; give the animation its "
                              "own .gif name")
        gif = check_output_path(args.gif, inputs, overwrite=args.force, extensions={".gif"})
    h, w = target_size(peek_shape(args.content), settings.size)
    check_inputs(args.content, args.styles, args.mask, settings, runtime)
    frame_every = max(1, settings.steps // GIF_FRAMES) if gif else 0
    check_room(out, w, h)
    if gif is not None:
        check_room(gif, w, h, frames=settings.steps // frame_every + 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        weights = load_weights(args.network_weights, progress=not args.quiet)
    for warning in caught:  # the fallback to random weights: loud, but one line, not a warnings traceback
        print(f"WARNING: {warning.message}", file=sys.stderr)
    print(f"network: {weights.describe()}")
    stopped = ""
    try:
        result = stylize(args.content, args.styles, settings, masks=args.mask, network=weights, runtime=runtime,
                         progress=not args.quiet, frame_every=frame_every)
    except RunStoppedError as e:  # a non-finite loss, or out of memory
        if e.result is None:  # refused before starting: nothing to save
            raise
        result, stopped = e.result, str(e)
    with _signals.holding():
        if stopped or result.interrupted:  # the result so far (marked "nstlib:status" in a PNG) only if asked
            name, code = _signals.name_and_exit_code()
            why = stopped or f"{result.status} ({name})"
            if args.save_partial:
                _signals.written.append(save_image(result, out, overwrite=args.force))
                why += f"; wrote the partial result to {show(out)} (marked nstlib:status={result.status!r})"
            else:
                why += "; nothing written (use --save-partial to keep the partial result)"
            print(f"nstlib: {why}", file=sys.stderr)
            return EXIT_USER_ERROR if stopped else code
        _signals.written.append(save_image(result, out, overwrite=args.force))
        print(f"wrote {show(out)} ({result.image.shape[-1]}x{result.image.shape[-2]}) in {result.seconds:.1f} s; "
              f"loss {result.history[0]['total']:.4g} -> {result.final['total']:.4g}")
        if gif is not None:
            try:
                _signals.written.append(save_gif(result, gif, overwrite=args.force))
            except OutputError as e:  # the image is safe: say so, or the user would think the run was lost
                raise OutputError(f"{e}; the image {show(out)} was written") from None
            print(f"wrote {show(gif)} ({len(result.frames)} frames)")
    return 0


def run_demo(args: argparse.Namespace, settings: Settings, runtime: Runtime) -> int:
    """`run_stylize` on the bundled samples, into --out (created if missing)."""
    from nstlib.io.data import sample_path

    if not args.out:
        raise OutputError("--out '': give a folder name, such as nstlib-demo (. for the current folder)")
    folder = Path(args.out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--out {show(folder)}: is a file, not a folder; give a folder name") from None
    except OSError as e:
        raise OutputError(f"--out {show(folder)}: cannot create this folder ({e.strerror or e}); choose another "
                          "place") from None
    args.content, args.styles, args.mask = sample_path("astronaut"), [sample_path("stained_glass")], []
    args.output, args.gif = folder / "astronaut_stained_glass.png", folder / "astronaut_stained_glass.gif"
    print(f"stylizing the bundled astronaut at {settings.size}px, {settings.steps} {settings.optimizer} steps")
    return run_stylize(args, settings, runtime)


def main(argv: Sequence[str] | None = None) -> int:
    """The `nstlib` command. A user error is one stderr line and exit code 2; a signal, or a stdout or stderr that
    cannot encode or write a line, causes no traceback: the run's own outcome decides the exit code."""
    with contextlib.suppress(AttributeError, ValueError):  # not a text stream: leave it alone
        sys.stdout.reconfigure(errors="backslashreplace", line_buffering=True)  # each report line at once
    start = time.perf_counter()
    with (contextlib.redirect_stdout(_Forgiving(sys.stdout, 1)), contextlib.redirect_stderr(_Forgiving(sys.stderr, 2)),
          _signals.installed()):
        try:
            args = build_parser().parse_args(argv)
            settings, runtime = _settings(args)
            code = (run_demo if args.command == "demo" else run_stylize)(args, settings, runtime)
            if code == 0:
                print(f"done in {time.perf_counter() - start:.1f} s")
            return code
        except NstlibError as e:
            one_line = str(e).replace("\r", "\\r").replace("\n", "\\n")  # line breaks from a file name, escaped
            print(f"nstlib: error: {one_line}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:  # a signal outside the optimisation loop (loading torch or images), or after writing
            written = " and ".join(show(path) for path in _signals.written)
            name, code = _signals.name_and_exit_code()
            print(f"nstlib: interrupted ({name}); " + (f"wrote {written}, complete" if written else "nothing written"),
                  file=sys.stderr)
            return code


if __name__ == "__main__":
    sys.exit(main())
