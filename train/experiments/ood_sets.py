"""Out-of-distribution inputs at MNIST's format (28×28, pixels in [0, 1]), made offline.

- :func:`letters`: letters A–Z (upper or lower case, one class per letter as in EMNIST
  letters) rendered from the DejaVu fonts matplotlib ships, a stand-in for EMNIST
  letters (which would need a download); each is drawn at a random font, case and small
  rotation, cropped, scaled to fit 20×20 and centred by its centre of mass in 28×28, the
  way MNIST digits were normalised.
- :func:`small_digits`: scikit-learn's 8×8 digits (pixels / 16) upsampled bilinearly to
  20×20 and padded to 28×28 (MNIST's 20×20 box), with their labels.
- :func:`photo_patches`: grey 16×16 patches of scikit-learn's two photographs (the right
  20 % of each, the test region of the ``patches`` data set), upsampled bilinearly to
  28×28; pixels grey / 255 in [0, 1], not whitened, patches of std < 0.05 skipped;
  no labels.

Each returns a ``train.data.Dataset`` with ``input_shape`` (28, 28).
"""
from __future__ import annotations

import glob
import os

import numpy as np

SIDE, BOX = 28, 20
MIN_CONTRAST = 0.05
"""Photo patches with a grey-level std below this are skipped (flat sky: R², whose
denominator is the patch's variance, is meaningless there)."""


def _dataset(x, y, name, source, prep):
    from train.data import Dataset

    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0).reshape(len(x), SIDE * SIDE)
    return Dataset(x.astype(np.float32), y, (SIDE, SIDE),
                   dict(name=name, source=source, preprocessing=prep, split="test"))


def _centre(img: np.ndarray) -> np.ndarray:
    """A grey image (h, w) in [0, 1]: crop to its ink, scale to fit 20×20, centre of mass at
    the middle of 28×28 (MNIST's normalisation)."""
    from PIL import Image
    from scipy import ndimage

    rows, cols = np.flatnonzero(img.max(1) > 0.05), np.flatnonzero(img.max(0) > 0.05)
    if rows.size == 0:
        return np.zeros((SIDE, SIDE))
    img = img[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = img.shape
    s = BOX / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray((img * 255).astype(np.uint8)).resize(
        (nw, nh), Image.LANCZOS), dtype=np.float64) / 255.0
    out = np.zeros((SIDE, SIDE))
    cy, cx = ndimage.center_of_mass(small) if small.sum() > 0 else (nh / 2, nw / 2)
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - nh))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - nw))
    out[top:top + nh, left:left + nw] = small
    return np.clip(out, 0.0, 1.0)


def dejavu_fonts() -> list[str]:
    """The DejaVu TrueType files matplotlib ships (offline), Display faces left out."""
    import matplotlib

    found = sorted(glob.glob(os.path.join(matplotlib.get_data_path(), "fonts", "ttf",
                                          "DejaVu*.ttf")))
    found = [f for f in found if "Display" not in os.path.basename(f)]
    if not found:
        raise RuntimeError("no DejaVu fonts found in matplotlib's data folder")
    return found


def letters(n: int, seed: int = 0):
    """n rendered letters, class i % 26 for the i-th (A=0 … Z=25); see the module doc."""
    from PIL import Image, ImageDraw, ImageFont

    fonts = dejavu_fonts()
    rng = np.random.default_rng([seed, 0x1E77E5])
    x, y = np.zeros((n, SIDE, SIDE)), np.arange(n, dtype=np.int64) % 26
    for i in range(n):
        ch = chr((ord("A") if rng.random() < 0.5 else ord("a")) + int(y[i]))
        font = ImageFont.truetype(fonts[int(rng.integers(len(fonts)))], 52)
        im = Image.new("L", (96, 96), 0)
        ImageDraw.Draw(im).text((48, 48), ch, fill=255, font=font, anchor="mm")
        im = im.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
        x[i] = _centre(np.asarray(im, dtype=np.float64) / 255.0)
    return _dataset(x, y, "letters",
                    f"letters A-Z rendered from matplotlib's DejaVu fonts ({len(fonts)} faces); "
                    "a stand-in for EMNIST letters",
                    "random font, case and rotation (±12°), cropped, fit to 20x20, centred "
                    "by centre of mass in 28x28")


def small_digits(n: int | None = None, seed: int = 0):
    """scikit-learn's 8×8 digits (test split of ``digits``) upsampled to MNIST's format."""
    from scipy import ndimage

    from train.data import load_dataset

    ds = load_dataset("digits", "test", seed=seed).head(n)
    imgs = ds.x.reshape(-1, 8, 8).astype(np.float64)
    big = ndimage.zoom(imgs, (1, BOX / 8, BOX / 8), order=1)
    x = np.zeros((len(imgs), SIDE, SIDE))
    o = (SIDE - BOX) // 2
    x[:, o:o + BOX, o:o + BOX] = big
    return _dataset(x, ds.y, "sklearn digits 28x28", ds.meta["source"],
                    "pixels / 16, bilinear 8x8 -> 20x20, padded to 28x28")


def photo_patches(n: int, seed: int = 0):
    """n grey 16×16 patches of the photographs' test region, upsampled to 28×28."""
    from scipy import ndimage
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng([seed, 0xFA7C, 28])
    ims = [im.astype(np.float64).mean(axis=-1) / 255.0 for im in load_sample_images().images]
    out, i = [], 0
    while len(out) < n:
        im = ims[i % len(ims)]
        i += 1
        h, w = im.shape
        r = int(rng.integers(0, h - 16 + 1))
        c = int(rng.integers(int(w * 0.8), w - 16 + 1))
        patch = im[r:r + 16, c:c + 16]
        if patch.std() >= MIN_CONTRAST:
            out.append(ndimage.zoom(patch, SIDE / 16, order=1))
    return _dataset(np.stack(out), None, "photo patches 28x28",
                    "sklearn.datasets.load_sample_images() (china.jpg, flower.jpg), right 20%",
                    "grey = mean(RGB)/255, 16x16 patches (std >= 0.05) upsampled bilinearly "
                    "to 28x28, not whitened")
