"""The tuning panel: one configuration on eight content x style pairs, scored by bench/metric.py, with pictures.

    python bench/tuning.py NAME [--size 256] [--steps 150] [--set FIELD=VALUE ...] [--paintings DIR] [--out DIR]
    python bench/tuning.py --compare NAME [NAME ...] [--size 256] [--out DIR]

The first form stylises every pair with nstlib's defaults changed by `--set` (a `Settings` field, the value read as
JSON, else as a string: --set style_weight=0.5 --set coarse_to_fine=false) on the packaged VGG16, one thread, and
prints a Markdown table: the sliced-Wasserstein style ratio, the content ratio, the worst tile and the Gram style
fraction (bench/metric.py defines them; the first three are not nstlib's objective, so they cannot flatter it) and
the CPU seconds. It writes OUT/NAME/SIZE/: each picture, table.md and scores.json. The second form draws the contact
sheet OUT/compare-SIZE-NAME1-NAME2....jpg: per pair, the photo, the style and each configuration's picture with
its scores.

The panel: four photos and four styles, each used twice; two public-domain paintings (The Starry Night, The Great
Wave, read from --paintings DIR or downloaded with `nstlib.painting`), a strong pattern (stained glass) and a weak
one (waves). docs/tuning.md has the results.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from metric import WEIGHTS, metric_network, scores  # bench/metric.py
from PIL import Image, ImageDraw

import nstlib

PAIRS = (("chelsea", "stained_glass"), ("astronaut", "starry_night"), ("coffee", "starry_night"),
         ("chelsea", "great_wave"), ("rocket", "great_wave"), ("coffee", "stained_glass"), ("astronaut", "waves"),
         ("rocket", "waves"))
COLUMNS = ("sw_style", "content", "worst_tile", "gram_style", "seconds")


def load_style(name: str, size: int, paintings: Path | None) -> torch.Tensor:
    """A bundled style, or a painting from `paintings` (downloaded there, or to nstlib's cache, when missing)."""
    if name in nstlib.PAINTINGS:
        return nstlib.painting(name, size, cache_dir=paintings, progress=False)
    return nstlib.sample(name, size)


def parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def fmt(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.3f}"


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = nstlib.Settings(**{**overrides, "steps": args.steps})
    folder = args.out / args.name / str(args.size)
    folder.mkdir(parents=True, exist_ok=True)
    net = metric_network()
    stylize_net = net
    if not set(settings.layers) <= set(net.layers):
        stylize_net = nstlib.VGGFeatures(settings.layers, nstlib.load_weights(WEIGHTS))
    head = (f"{args.name}: {args.size} px, {args.steps} steps, {overrides or 'default settings'}; "
            f"{net.source.split(';')[0]}; torch {torch.__version__}, {platform.machine()}, 1 thread")
    lines = [head, "", "| pair | SW style | content | worst tile | Gram style | CPU s |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rows = {}
    for content_name, style_name in PAIRS:
        content, style = nstlib.sample(content_name, args.size), load_style(style_name, args.size, args.paintings)
        start = time.process_time()
        out = nstlib.stylize(content, style, settings, network=stylize_net, progress=False).image
        row = {**scores(net, out, content, style), "seconds": time.process_time() - start}
        rows[f"{content_name}+{style_name}"] = row
        nstlib.save_image(out, folder / f"{content_name}+{style_name}.png", overwrite=True)
        lines.append(f"| {content_name} + {style_name} | " + " | ".join(fmt(row[k]) for k in COLUMNS) + " |")
        print(lines[-1], flush=True)
    means = {k: sum(r[k] for r in rows.values()) / len(rows) for k in COLUMNS}
    worst = {k: max(r[k] for r in rows.values()) for k in COLUMNS}
    lines += ["| **mean** | " + " | ".join(fmt(means[k]) for k in COLUMNS) + " |",
              "| **worst** | " + " | ".join(fmt(worst[k]) for k in COLUMNS[:3]) + " | | |"]
    print("\n".join(lines[-2:]))
    (folder / "table.md").write_text("\n".join(lines) + "\n")
    (folder / "scores.json").write_text(json.dumps({"head": head, "rows": rows, "mean": means}, indent=1))


def sheet(names: list[str], size: int, out: Path, paintings: Path | None) -> Path:
    """Rows: photo | style | each configuration's picture, in cells of max(256, size) px, its scores under it."""
    cell, text = max(256, size), 30
    columns = ["photo", "style", *names]
    img = Image.new("RGB", (cell * len(columns), 16 + (cell + text) * len(PAIRS)), "white")
    draw = ImageDraw.Draw(img)
    for j, title in enumerate(columns):
        draw.text((j * cell + 4, 2), title, fill="black")
    for i, (content_name, style_name) in enumerate(PAIRS):
        y = 16 + i * (cell + text)
        pictures = [nstlib.to_pil(nstlib.sample(content_name, size)),
                    nstlib.to_pil(load_style(style_name, size, paintings))]
        painting = nstlib.PAINTINGS.get(style_name)
        labels = [content_name, f"{painting.title}\n{painting.artist}, {painting.year}, {painting.licence}"
                  if painting else style_name]
        for name in names:
            folder = out / name / str(size)
            row = json.loads((folder / "scores.json").read_text())["rows"][f"{content_name}+{style_name}"]
            pictures.append(Image.open(folder / f"{content_name}+{style_name}.png").convert("RGB"))
            labels.append(f"SW {row['sw_style']:.3f} content {row['content']:.3f}\n"
                          f"tile {row['worst_tile']:.2f} gram {row['gram_style']:.3f} {row['seconds']:.0f} s")
        for j, (picture, label) in enumerate(zip(pictures, labels)):
            scale = cell / max(picture.size)
            picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)
            img.paste(picture, (j * cell, y))
            draw.text((j * cell + 4, y + picture.height + 1), label, fill="black")
    path = out / f"compare-{size}-{'-'.join(names)}.jpg"
    img.save(path, quality=88)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help="a name for this configuration (its folder under --out)")
    p.add_argument("--compare", nargs="+", metavar="NAME", help="configurations to put side by side (already run)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a Settings field to change")
    p.add_argument("--paintings", type=Path, default=None, help="a folder with starry_night.jpg and great_wave.jpg")
    p.add_argument("--out", type=Path, default=Path("tuning-out"), help="where pictures and tables go")
    args = p.parse_args()
    if args.compare:
        print(f"wrote {sheet(args.compare, args.size, args.out, args.paintings)}")
    elif args.name:
        run(args)
    else:
        p.error("give a NAME to run, or --compare NAME ...")


if __name__ == "__main__":
    main()
