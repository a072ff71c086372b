"""Weather corruptions (sw.data.corruptions): determinism, shape/dtype, severities, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform

from sw.core.errors import UserError
from sw.data import corruptions
from sw.data.corruptions import CONDITIONS, ImageFormatError, SeverityError, UnknownConditionError, corrupt

# Conditions whose output does not depend on the seed (deterministic filters).
SEED_FREE = {"brightness", "contrast", "defocus_blur", "gaussian_blur", "jpeg_compression", "pixelate",
             "saturate", "zoom_blur"}
WEATHER = ("fog", "snow", "frost", "brightness", "rain", "sun_flare", "spatter")


def photo(size: tuple[int, int]) -> np.ndarray:
    """A real photograph (skimage's bundled astronaut) resized to `size` (h, w)."""
    resized = transform.resize(data.astronaut(), size, anti_aliasing=True)
    return np.clip(np.rint(resized * 255), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image32() -> np.ndarray:
    return photo((32, 32))


def test_registry_has_imagenet_c_and_albumentations_conditions():
    names = set(CONDITIONS.names())
    assert set(corruptions.IMAGENET_C) <= names
    assert {"rain", "sun_flare", "fog", "snow", "frost", "brightness"} <= names
    assert "fog" in CONDITIONS and list(CONDITIONS) == sorted(names)


@pytest.mark.parametrize("condition", CONDITIONS.names())
def test_every_condition_keeps_shape_dtype_and_repeats(condition, image32):
    first = corrupt(image32, condition, 3, seed=7)
    again = corrupt(image32, condition, 3, seed=7)
    assert first.shape == image32.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image32), "the corruption left the image unchanged"
    if condition not in SEED_FREE:
        assert not np.array_equal(first, corrupt(image32, condition, 3, seed=8)), "seed has no effect"


@pytest.mark.parametrize("shape", [(8, 8, 3), (25, 20, 3), (31, 64, 3), (48, 40, 3)])
@pytest.mark.parametrize("condition", ["fog", "snow", "frost", "rain", "sun_flare", "glass_blur"])
def test_small_and_non_square_images_keep_their_shape(condition, shape):
    image = photo(shape[:2])
    out = corrupt(image, condition, 4, seed=1)
    assert out.shape == shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(out, corrupt(image, condition, 4, seed=1))


def test_global_numpy_random_state_is_left_alone(image32):
    np.random.seed(123)
    expected = np.random.random(5)
    np.random.seed(123)
    corrupt(image32, "snow", 5, seed=0)
    corrupt(image32, "gaussian_noise", 2, seed=0)
    np.testing.assert_array_equal(np.random.random(5), expected)


def test_result_does_not_depend_on_earlier_calls(image32):
    reference = corrupt(image32, "fog", 2, seed=3)
    corrupt(image32, "snow", 5, seed=99)
    corrupt(image32, "rain", 5, seed=99)
    np.testing.assert_array_equal(corrupt(image32, "fog", 2, seed=3), reference)


@pytest.mark.parametrize("condition", ["fog", "snow", "frost", "brightness", "rain", "gaussian_noise",
                                       "contrast", "sun_flare"])
def test_higher_severity_changes_the_image_more(condition):
    image = photo((64, 64))
    distance = [np.abs(corrupt(image, condition, s, seed=0).astype(float) - image).mean() for s in (1, 5)]
    assert distance[1] > distance[0]


def test_derive_seed_differs_per_image_and_repeats():
    seeds = [corruptions.derive_seed(0, i) for i in range(100)]
    assert len(set(seeds)) == 100
    assert seeds == [corruptions.derive_seed(0, i) for i in range(100)]
    assert corruptions.derive_seed(1, 0) != seeds[0]
    assert all(0 <= s < 2**32 for s in seeds)
    assert corruptions.derive_seed(-5, 3) == corruptions.derive_seed(-5, 3)


def test_unknown_condition_is_a_clear_user_error(image32):
    with pytest.raises(UnknownConditionError) as info:
        corrupt(image32, "hail", 1, seed=0)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert "'hail'" in message and "fog" in message and "\n" not in message


@pytest.mark.parametrize("severity", [0, 6, -1, 2.5, "3", True, None])
def test_severity_out_of_range_is_a_clear_user_error(image32, severity):
    with pytest.raises(SeverityError, match="expected an integer from 1 to 5"):
        corrupt(image32, "fog", severity, seed=0)


def test_numpy_integer_severity_is_accepted(image32):
    np.testing.assert_array_equal(corrupt(image32, "fog", np.int64(2), 0), corrupt(image32, "fog", 2, 0))


@pytest.mark.parametrize("bad", [np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8),
                                 np.zeros((32, 32, 3), np.float32), [[0, 0, 0]]])
def test_wrong_image_format_is_a_clear_user_error(bad):
    with pytest.raises(ImageFormatError, match="uint8 image of shape H x W x 3"):
        corrupt(bad, "fog", 1, seed=0)
