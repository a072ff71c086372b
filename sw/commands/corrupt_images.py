"""`python -m sw corrupt-images IN OUT --conditions fog snow --severities 1 3 5`.

Every image under IN (recursively) is written, corrupted, to
`OUT/<condition>/<severity>/<path relative to IN>`: an IN laid out as `<class>/<img>` gives
the ImageNet-C layout that the `imagenet_c` dataset reads. Images are converted to RGB
(grayscale and alpha are dropped) and keep their size and file format unless `--format`
says otherwise. The seed of an image is derived from `--seed` and its relative path, so
a run repeats exactly and adding files does not change the others. Existing outputs are
kept (an interrupted run resumes) unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from sw.core.errors import DataError, UserError
from sw.data import corruptions

HELP = "corrupt an image folder with weather conditions at several severities (ImageNet-C layout)"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
FORMATS = {"png": ".png", "jpg": ".jpg", "bmp": ".bmp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("output", metavar="OUT", type=Path, help="output folder: OUT/<condition>/<severity>/...")
    parser.add_argument("--conditions", nargs="+", required=True, metavar="NAME",
                        help=f"conditions ({', '.join(corruptions.CONDITIONS.names())})")
    parser.add_argument("--severities", nargs="+", type=int, default=list(corruptions.SEVERITIES), metavar="S",
                        help="severities 1-5 (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None,
                        help="output file format (default: same as the input file)")
    parser.add_argument("--overwrite", action="store_true", help="rewrite outputs that already exist")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                        help="progress bar (default: on)")


def run(args: argparse.Namespace) -> int:
    for condition in args.conditions:
        corruptions.check_condition(condition)
    for severity in args.severities:
        corruptions.check_severity(severity)
    if args.workers < 1:
        raise UserError(f"--workers: expected an integer >= 1, got {args.workers}")
    if not args.input.is_dir():
        raise DataError(f"{args.input}: expected an existing folder of images")
    sources = find_images(args.input)
    if not sources:
        raise DataError(f"{args.input}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    if args.output.resolve().is_relative_to(args.input.resolve()):
        raise UserError(f"{args.output}: the output folder must not be inside the input folder {args.input}")

    conditions = list(dict.fromkeys(args.conditions))
    severities = list(dict.fromkeys(args.severities))
    tasks = [(str(args.input), str(rel), str(args.output), conditions, severities, args.seed, args.format,
              args.overwrite) for rel in sources]
    written = skipped = 0
    failures: list[str] = []
    bar = tqdm(total=len(tasks) * len(conditions) * len(severities), desc="corrupting", unit="img",
               disable=not args.progress)
    for result in _map(corrupt_file, tasks, args.workers):
        failure, n_written, n_skipped = result
        if failure:
            failures.append(failure)
        written += n_written
        skipped += n_skipped
        bar.update(len(conditions) * len(severities))
    bar.close()
    print(f"{written} images written, {skipped} already present, to {args.output}")
    if failures:
        raise DataError(f"{len(failures)} of {len(sources)} images could not be processed; first: {failures[0]}")
    return 0


def find_images(root: Path) -> list[Path]:
    """Image files under `root`, as sorted paths relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def path_seed(seed: int, rel: str) -> int:
    """The seed of one file: derived from the base seed and its relative path."""
    digest = hashlib.blake2b(Path(rel).as_posix().encode(), digest_size=8).digest()
    return corruptions.derive_seed(seed, int.from_bytes(digest, "little"))


def corrupt_file(task: tuple) -> tuple[str | None, int, int]:
    """Read one image and write it under every condition x severity; (failure, written, skipped)."""
    in_root, rel, out_root, conditions, severities, seed, fmt, overwrite = task
    rel_path = Path(rel)
    if fmt:
        rel_path = rel_path.with_suffix(FORMATS[fmt])
    targets = [(c, s, Path(out_root) / c / str(s) / rel_path) for c in conditions for s in severities]
    todo = [t for t in targets if overwrite or not t[2].exists()]
    if not todo:
        return None, 0, len(targets)
    source = Path(in_root) / rel
    try:
        with Image.open(source) as handle:
            image = np.asarray(handle.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"{source}: cannot read the image ({exc})", 0, 0
    image_seed = path_seed(seed, rel)
    for condition, severity, target in todo:
        out = corruptions.corrupt(image, condition, severity, image_seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")  # never leave a half-written image
        image_format = Image.registered_extensions()[target.suffix.lower()]
        options = {"quality": 95} if image_format == "JPEG" else {}
        Image.fromarray(out).save(partial, format=image_format, **options)
        partial.replace(target)
    return None, len(todo), len(targets) - len(todo)


def _map(func, tasks: list, workers: int):
    """`map` in order, in `workers` processes when there is more than one."""
    if workers <= 1 or len(tasks) <= 1:
        yield from map(func, tasks)
        return
    with corruptions.process_pool(workers) as pool:
        yield from pool.map(func, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
