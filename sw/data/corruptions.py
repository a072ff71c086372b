"""Weather and other image corruptions at severities 1-5, reproducible for a given seed.

`CONDITIONS` maps a condition name to a function `(image, severity, seed) -> image`;
`corrupt(image, condition, severity, seed)` validates its arguments and calls it.
Images are `uint8` arrays `H x W x 3`; the result has the same shape and dtype.

Sources:
- the 19 ImageNet-C corruptions (fog, snow, frost, brightness, contrast, gaussian_noise, ...)
  from `imagecorruptions-imaug` (the maintained fork of `imagecorruptions`);
- `rain` and `sun_flare` from `albumentations`, with severity tables defined here
  (ImageNet-C has neither).

Severity scale: the ImageNet-C tables of `imagecorruptions` are calibrated for 224 px
photographs and are much harsher on 32 px images (ImageNet-C fog at severity 1 is about as
strong as the CIFAR-10-C table's severity 5); a small CNN on 32 px digits is near chance in
fog at every severity. Compare severities within a condition, not across image sizes.

Determinism: the same (image, condition, severity, seed) always gives the same output.
`imagecorruptions` draws from numpy's global RNG, so the global state is seeded for the
call and restored afterwards (callers' random streams are not disturbed; not thread-safe,
which is why parallel corruption uses processes). `albumentations` is seeded through
`A.Compose(..., seed=...)`. Datasets derive one seed per image with `derive_seed(seed,
index)` so that images get different noise while a run still repeats exactly.

Small images: the ImageNet-C code needs at least 32 x 32 pixels. Smaller images (8 x 8
digits, say) are upscaled (bicubic) so the shorter side is 32, corrupted, and scaled back
(area averaging) to the original size. The corruption is therefore seen at the 32-pixel
scale, then downsampled with the image. All conditions go through the same path so that
severities stay comparable across conditions.

Both libraries are imported lazily so that `import sw.data.corruptions` stays fast (the
workload loader imports it only to validate condition names).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Callable

import numpy as np

from sw.core.errors import UserError
from sw.core.registry import Registry

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

SEVERITIES = (1, 2, 3, 4, 5)
MIN_SIDE = 32  # imagecorruptions refuses smaller images

# The 19 corruptions of imagecorruptions (15 ImageNet-C + 4 validation ones).
IMAGENET_C = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression", "speckle_noise", "gaussian_blur",
    "spatter", "saturate",
)
# Functions of imagecorruptions that take their own `seed` instead of the global RNG.
_OWN_SEED = ("impulse_noise", "glass_blur")

ConditionFunction = Callable[[np.ndarray, int, int], np.ndarray]
CONDITIONS: Registry[ConditionFunction] = Registry("condition")


class UnknownConditionError(UserError):
    """A condition name that is not registered."""

    def __init__(self, condition: object):
        super().__init__(f"unknown condition {condition!r}: expected one of {', '.join(CONDITIONS.names())}")


class SeverityError(UserError):
    """A severity outside 1..5."""

    def __init__(self, severity: object):
        super().__init__(f"severity {severity!r} is out of range: expected an integer from 1 to 5")


class ImageFormatError(UserError):
    """An image that is not uint8 H x W x 3."""


def derive_seed(seed: int, index: int) -> int:
    """A 32-bit seed for image `index` of a run seeded with `seed` (independent streams)."""
    state = np.random.SeedSequence([int(seed) % 2**64, int(index) % 2**64]).generate_state(1)
    return int(state[0])


def _seed32(seed: int) -> int:
    return int(seed) % 2**32


def corrupt(image: np.ndarray, condition: str, severity: int, seed: int) -> np.ndarray:
    """Return `image` (uint8 H x W x 3) corrupted by `condition` at `severity` (1-5)."""
    check_condition(condition)
    check_severity(severity)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = (f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ImageFormatError(f"corrupt: expected a uint8 image of shape H x W x 3, got {got}")
    height, width = image.shape[:2]
    if min(height, width) >= MIN_SIDE:
        out = CONDITIONS.get(condition)(image, int(severity), _seed32(seed))
    else:
        out = _corrupt_small(image, condition, int(severity), _seed32(seed))
    return _as_uint8(out, image.shape)


def check_condition(condition: str) -> None:
    """Raise `UnknownConditionError` unless `condition` is registered."""
    if not isinstance(condition, str) or condition not in CONDITIONS:
        raise UnknownConditionError(condition)


def check_severity(severity: int) -> None:
    """Raise `SeverityError` unless `severity` is an integer in 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise SeverityError(severity)


def _corrupt_small(image: np.ndarray, condition: str, severity: int, seed: int) -> np.ndarray:
    import cv2  # lazy: OpenCV (0.2 s) only where images are corrupted

    height, width = image.shape[:2]
    scale = MIN_SIDE / min(height, width)
    big = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))  # cv2 wants (w, h)
    upscaled = cv2.resize(image, big, interpolation=cv2.INTER_CUBIC)
    corrupted = _as_uint8(CONDITIONS.get(condition)(upscaled, severity, seed), upscaled.shape)
    return cv2.resize(corrupted, (width, height), interpolation=cv2.INTER_AREA)


def _as_uint8(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.asarray(image)
    if out.dtype != np.uint8:
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if out.shape != shape:  # a library returning a different size would be a bug worth surfacing
        raise RuntimeError(f"corruption changed the image shape from {shape} to {out.shape}")
    return out


# ---------------------------------------------------------------- imagecorruptions


def _imagecorruptions_condition(name: str) -> ConditionFunction:
    def apply(image: np.ndarray, severity: int, seed: int) -> np.ndarray:
        from imagecorruptions import corrupt as ic_corrupt  # lazy: 0.5 s, only for its conditions

        kwargs = {"seed": seed} if name in _OWN_SEED else {}
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            return ic_corrupt(image, severity=severity, corruption_name=name, **kwargs)
        finally:
            np.random.set_state(saved)

    apply.__name__ = name
    apply.__doc__ = f"ImageNet-C {name} (imagecorruptions)."
    return apply


for _name in IMAGENET_C:
    CONDITIONS.add(_name, _imagecorruptions_condition(_name))


# ---------------------------------------------------------------- albumentations


def _albumentations():
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # it phones home at import otherwise
    import albumentations  # lazy: 0.5 s, only for its conditions (and after the variable above)

    return albumentations


def _apply_albumentations(transform, image: np.ndarray, seed: int) -> np.ndarray:
    A = _albumentations()
    return A.Compose([transform], seed=seed)(image=image)["image"]


# Rain, by severity: (rain_type -> drops per image height, drop length / height,
# brightness coefficient, blur kernel per 32 px of height).
_RAIN = {
    1: ("drizzle", 1 / 10, 0.9, 1),
    2: ("default", 1 / 8, 0.85, 1),
    3: ("heavy", 1 / 6, 0.8, 2),
    4: ("torrential", 1 / 5, 0.75, 2),
    5: ("torrential", 1 / 4, 0.65, 3),
}


@CONDITIONS.register("rain")
def rain(image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """Slanted rain streaks, dimmed and blurred (albumentations RandomRain)."""
    A = _albumentations()
    rain_type, length, brightness, blur = _RAIN[severity]
    height = image.shape[0]
    transform = A.RandomRain(
        slant_range=(-15, 15), drop_length=max(1, round(height * length)),
        drop_width=1 if height < 128 else 2, drop_color=(200, 200, 200),
        blur_value=max(1, round(blur * height / 32)), brightness_coefficient=brightness,
        rain_type=rain_type, p=1.0)
    return _apply_albumentations(transform, image, seed)


# Sun flare, by severity: (source radius / image diagonal, range of flare circles).
_SUN_FLARE = {
    1: (0.15, (2, 4)),
    2: (0.20, (3, 6)),
    3: (0.25, (4, 8)),
    4: (0.30, (6, 10)),
    5: (0.40, (8, 12)),
}


@CONDITIONS.register("sun_flare")
def sun_flare(image: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """A bright sun with lens-flare circles in the upper half (albumentations RandomSunFlare)."""
    A = _albumentations()
    radius, circles = _SUN_FLARE[severity]
    diagonal = float(np.hypot(*image.shape[:2]))
    transform = A.RandomSunFlare(
        flare_roi=(0.0, 0.0, 1.0, 0.5), src_radius=max(2, round(radius * diagonal)),
        num_flare_circles_range=circles, method="overlay", p=1.0)
    return _apply_albumentations(transform, image, seed)


def corrupt_many(images: list[np.ndarray], condition: str, severity: int, seeds: list[int]) -> list[np.ndarray]:
    """Corrupt several images (one seed each); the unit of work of a process pool."""
    return [corrupt(image, condition, severity, seed) for image, seed in zip(images, seeds, strict=True)]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for corrupting images.

    Spawned, not forked: the parent may hold torch/OpenMP threads that a fork would break.
    Starting one costs seconds (imports), so long jobs create one and reuse it.
    """
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def _init_worker() -> None:
    import cv2  # lazy: OpenCV (0.2 s) only where images are corrupted

    cv2.setNumThreads(1)  # the pool is the parallelism
