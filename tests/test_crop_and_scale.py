"""dataset.crop_and_scale: the three Vision options on real image files, pixel by pixel.

The images are flat grey with a red stripe at both ends of the long side, so each option
leaves a mark that can be checked pixel by pixel: center_crop cuts the stripes away, scale_fit
keeps them and adds black padding, scale_fill stretches the image with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from precision_sweep.data.images import read_images
from sweep_testing import compose

GREY, RED = (128, 128, 128), (255, 0, 0)
# Pillow's bilinear filter shrinking by 4 is a triangle 8 source pixels wide: a 6-pixel red
# stripe gives one pure red output pixel, then one half red, half grey ((255+128)/2 rounds to
# 192, (0+128)/2 = 64), then pure grey.
HALF = (192, 64, 64)
# The long side of a striped image shrunk from 32 to 8 pixels.
PROFILE = np.array([RED, HALF, GREY, GREY, GREY, GREY, HALF, RED], dtype=np.float32)


def _striped(path: Path, width: int, height: int, stripe: int = 6) -> Path:
    """A grey image with a red stripe ``stripe`` pixels wide at both ends of its long side."""
    pixels = np.full((height, width, 3), GREY, dtype=np.uint8)
    if width >= height:
        pixels[:, :stripe] = pixels[:, -stripe:] = RED
    else:
        pixels[:stripe] = pixels[-stripe:] = RED
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    return _striped(tmp_path / "wide.png", width=32, height=8)  # 4:1, width is long


@pytest.fixture
def tall(tmp_path: Path) -> Path:
    return _striped(tmp_path / "tall.png", width=8, height=32)  # 1:4, height is long


def _read(path: Path, option: str | None, size=(8, 8)) -> np.ndarray:
    kwargs = {} if option is None else {"crop_and_scale": option}
    x = read_images([path], size, "RGB", resize=True, **kwargs)
    assert x.shape == (1, *size, 3) and x.dtype == np.float32
    return x[0]


def test_center_crop_keeps_the_centre_of_the_long_side_and_drops_its_border(wide, tall):
    # The short side (8) already fits: scale 1, then the centre 8 of 32 (pixels 12..19), all grey.
    grey = np.full((8, 8, 3), GREY, dtype=np.float32)
    assert np.array_equal(_read(wide, "center_crop"), grey)
    assert np.array_equal(_read(tall, "center_crop"), grey)


def test_scale_fit_pads_the_short_side_with_black_rows_or_columns(wide, tall):
    # The long side fits: 32x8 shrinks by 4 to 8x2 (stripes kept), centred between 3 black
    # rows above and 3 below.
    black3 = np.zeros((3, 8, 3), dtype=np.float32)
    expected = np.concatenate([black3, np.stack([PROFILE, PROFILE]), black3])
    assert np.array_equal(_read(wide, "scale_fit"), expected)
    # The tall image is the same turned by 90 degrees: black columns left and right.
    assert np.array_equal(_read(tall, "scale_fit"), expected.transpose(1, 0, 2))


def test_scale_fit_pads_grayscale_with_zero(tmp_path):
    path = tmp_path / "wide_l.png"
    Image.fromarray(np.full((4, 16), 200, dtype=np.uint8)).save(path)
    x = read_images([path], (8, 8), "L", resize=True, crop_and_scale="scale_fit")[0, ..., 0]
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[3:5] = 200
    assert np.array_equal(x, expected)


def test_scale_fill_stretches_the_whole_image_with_its_border(wide, tall):
    # 32x8 -> 8x8: the long side shrinks by 4 (stripes kept), the short side is kept: every
    # row is the long side's profile; nothing padded, nothing cropped.
    assert np.array_equal(_read(wide, "scale_fill"), np.stack([PROFILE] * 8))
    assert np.array_equal(_read(tall, "scale_fill"), np.stack([PROFILE] * 8, axis=1))


def test_scale_fill_is_the_default_and_the_earlier_bilinear_stretch(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (13, 29, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as image:
        before = np.asarray(image.convert("RGB").resize((7, 11), Image.Resampling.BILINEAR), dtype=np.float32)
    assert np.array_equal(_read(path, None, size=(11, 7)), before)
    assert np.array_equal(_read(path, "scale_fill", size=(11, 7)), before)
    assert compose(["dataset=image_folder", "dataset.path=/x"]).dataset.crop_and_scale == "scale_fill"


@pytest.mark.parametrize("option", ["center_crop", "scale_fit", "scale_fill"])
def test_every_option_gives_the_model_size_for_non_square_targets(wide, option):
    assert _read(wide, option, size=(5, 12)).shape == (5, 12, 3)


@pytest.mark.parametrize("option", ["center_crop", "scale_fit", "scale_fill"])
def test_an_image_of_the_model_size_is_left_as_it_is(tmp_path, option):
    path = _striped(tmp_path / "square.png", width=8, height=8, stripe=2)
    with Image.open(path) as image:
        assert np.array_equal(_read(path, option), np.asarray(image, dtype=np.float32))


def test_resize_false_still_refuses_another_size(wide):
    from precision_sweep.errors import UserInputError

    with pytest.raises(UserInputError, match="dataset.resize=false"):
        read_images([wide], (8, 8), "RGB", resize=False, crop_and_scale="center_crop")


def test_a_wrong_option_fails_at_composition_with_the_choices():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as info:
        compose(["dataset=image_folder", "dataset.path=/x", "dataset.crop_and_scale=stretch"])
    message = str(info.value.__cause__)
    assert all(choice in message for choice in ("center_crop", "scale_fit", "scale_fill")), message


@pytest.mark.parametrize("option", ["center_crop", "scale_fit", "scale_fill"])
def test_every_option_composes_for_every_dataset(option):
    for dataset in ("digits", "npz", "image_folder"):
        cfg = compose([f"dataset={dataset}", "dataset.path=/x", f"dataset.crop_and_scale={option}"])
        assert cfg.dataset.crop_and_scale == option


def test_the_image_folder_run_records_the_option(tmp_path):
    from precision_sweep.data.datasets import InputSpec
    from precision_sweep.data.loading import load_dataset

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(2):
            _striped(tmp_path / label / f"{i}.png", width=32, height=8)
    cfg = compose(["dataset=image_folder", f"dataset.path={tmp_path}", "dataset.test_size=1.0",
                   "dataset.crop_and_scale=center_crop"]).dataset
    data = load_dataset(cfg, InputSpec(shape=(8, 8, 3)))
    assert data.run_params["dataset_crop_and_scale"] == "center_crop"
    assert np.allclose(data.x_test, 128 / 255)  # the red stripes were cropped away
