"""The batched transforms against torchvision's per-image functional ops, and their random draws.

Tolerance: every op must match torchvision within atol=1e-6 (rtol=0) on float images in [0, 1];
rotation must match exactly (nearest-neighbour: a differing tie would move a whole pixel). Flips,
grayscale and normalize are in fact bit-exact; sharpness differs by float rounding only (~2e-7), as
it sums shifted slices where torchvision runs a depthwise conv2d.
"""
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from cifar_core import augment as A

ATOL = 1e-6
N = 64


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


def per_image(fn, x, *params):
    """torchvision's op applied to one image at a time: the reference."""
    return torch.stack([fn(x[i], *(p[i] for p in params)) for i in range(x.shape[0])])


@pytest.fixture
def images():
    return torch.rand(N, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def mask():
    m = torch.rand(N, generator=torch.Generator().manual_seed(2)) < 0.5
    assert 0 < m.sum() < N, "the batch must mix masked and unmasked images"
    return m


def _where(mask, fn):
    return lambda img, m: fn(img) if m else img


def test_grayscale_matches_torchvision(images, mask):
    ref = per_image(_where(mask, lambda im: TF.rgb_to_grayscale(im, num_output_channels=3)), images, mask)
    close(A.grayscale(images, mask), ref)


def test_flips_match_torchvision(images, mask):
    close(A.hflip(images, mask), per_image(_where(mask, TF.hflip), images, mask), atol=0)
    close(A.vflip(images, mask), per_image(_where(mask, TF.vflip), images, mask), atol=0)


@pytest.mark.parametrize("size", [(32, 32), (31, 33)])
def test_rotate_matches_torchvision_exactly(size):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(N, 3, *size, generator=g)
    fixed = torch.tensor([0.0, 30.0, -30.0, 15.5, -15.5, 90.0, -90.0, 45.0, 180.0, 1e-3])
    angles = torch.cat([fixed, torch.rand(N - len(fixed), generator=g) * 60 - 30])
    ref = per_image(lambda im, a: TF.rotate(im, float(a), interpolation=InterpolationMode.NEAREST),
                    x, angles)
    close(A.rotate(x, angles), ref, atol=0)


def test_rotate_fills_corners_with_zero():
    x = torch.ones(2, 3, 32, 32)
    out = A.rotate(x, torch.tensor([0.0, 30.0]))
    assert out[0].eq(1).all() and out[1, :, 0, 0].eq(0).all()


def test_adjust_sharpness_matches_torchvision(images, mask):
    ref = per_image(_where(mask, lambda im: TF.adjust_sharpness(im, 0.4)), images, mask)
    out = A.adjust_sharpness(images, 0.4, mask)
    close(out, ref)
    assert not torch.equal(out[mask], images[mask]), "factor 0.4 must change (blur) masked images"


def test_normalize_matches_torchvision(images):
    close(A.normalize(images), TF.normalize(images, A.MEAN, A.STD))


def test_augment_is_the_seed_pipeline_with_the_drawn_params(images):
    params = A.draw_params(N, torch.Generator().manual_seed(4), "cpu")
    out = A.augment(images, torch.Generator().manual_seed(4))

    def seed_pipeline(im, gray, hf, vf, angle, sharpen):
        im = TF.rgb_to_grayscale(im, num_output_channels=3) if gray else im
        im = TF.hflip(im) if hf else im
        im = TF.vflip(im) if vf else im
        im = TF.rotate(im, float(angle), interpolation=InterpolationMode.NEAREST, fill=[0.0] * 3)
        return TF.adjust_sharpness(im, 0.4) if sharpen else im

    close(out, per_image(seed_pipeline, images, *params))


def test_draw_params_frequencies_and_angle_range():
    b = 20_000
    p = A.draw_params(b, torch.Generator().manual_seed(5), "cpu")
    for name, prob in [("gray", 0.2), ("hflip", 0.5), ("vflip", 0.2), ("sharpen", 0.5)]:
        freq = getattr(p, name).float().mean().item()
        se = (prob * (1 - prob) / b) ** 0.5
        assert abs(freq - prob) < 5 * se, f"{name}: {freq:.4f} vs p={prob}"
    a = p.angles
    assert a.dtype == torch.float32 and a.min() >= -30 and a.max() <= 30
    assert abs(a.mean().item()) < 5 * (60 / 12**0.5) / b**0.5
    counts = torch.histc(a, bins=6, min=-30, max=30)  # uniform: each bin holds 1/6
    se = (b * (1 / 6) * (5 / 6)) ** 0.5
    assert (counts - b / 6).abs().max() < 5 * se, counts


def test_images_in_one_batch_get_different_params():
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=g).expand(N, 3, 32, 32)
    p = A.draw_params(N, torch.Generator().manual_seed(6), "cpu")
    for name in ("gray", "hflip", "vflip", "sharpen"):
        assert 0 < getattr(p, name).sum() < N, f"{name} is the same for every image"
    out = A.train_batch(x, "augment", torch.Generator().manual_seed(6))
    # Nearest-neighbour rotation can map two close angles to the same pixels, so not all N differ.
    assert len(torch.unique(out.flatten(1), dim=0)) > 0.9 * N, "identical inputs must come out different"


def test_train_batch_is_deterministic_for_a_seed(images):
    x = (images * 255).to(torch.uint8)
    def run(seed):
        return A.train_batch(x, "augment+normalize", torch.Generator().manual_seed(seed))

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("transform", A.TRANSFORMS)
def test_eval_batch_never_augments(images, transform):
    x = (images * 255).to(torch.uint8)
    scaled = x.float() / 255
    expected = TF.normalize(scaled, A.MEAN, A.STD) if "normalize" in transform else scaled
    close(A.eval_batch(x, transform), expected)


def test_none_is_exactly_x_over_255(images):
    x = (images * 255).to(torch.uint8)
    assert torch.equal(A.train_batch(x, "none", None), x.float() / 255)


def test_normalize_level_matches_torchvision(images):
    x = (images * 255).to(torch.uint8)
    close(A.train_batch(x, "normalize", None), TF.normalize(x.float() / 255, A.MEAN, A.STD))


@pytest.mark.parametrize("transform", A.TRANSFORMS)
def test_output_is_float32_same_shape_and_device_and_input_untouched(transform):
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    before = x.clone()
    for out in (A.train_batch(x, transform, torch.Generator().manual_seed(9)), A.eval_batch(x, transform)):
        assert out.dtype == torch.float32 and out.shape == x.shape and out.device == x.device
    assert torch.equal(x, before)


@pytest.mark.parametrize("fn", [lambda x: A.train_batch(x, "bogus", None),
                                lambda x: A.eval_batch(x, "bogus")])
def test_unknown_transform_is_refused_by_name(fn):
    with pytest.raises(ValueError, match="bogus.*augment\\+normalize"):
        fn(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
