"""nnU-Net v2's 2D training augmentation, built from MONAI transforms.

Probabilities and ranges follow nnUNetTrainer.get_training_transforms: rotation (any angle for square
patches) and scaling 0.7-1.4 each with p 0.2, Gaussian noise (variance up to 0.1) p 0.1, Gaussian blur
(sigma 0.5-1) p 0.2, multiplicative brightness and contrast 0.75-1.25 p 0.15 each, low resolution
(0.5-1) p 0.25, gamma 0.7-1.5 on the inverted image p 0.1 and on the image p 0.3, mirroring along each
axis p 0.5.
"""

from __future__ import annotations

import math

from monai import transforms as mt

IMAGE, LABEL = "image", "label"


def training_transforms(mirror_axes=(0, 1)) -> mt.Compose:
    """Dictionary transforms on {'image': float [1, H, W], 'label': [1, H, W]} tensors."""
    both = [IMAGE, LABEL]
    spatial_modes = ("bilinear", "nearest")
    return mt.Compose([
        mt.RandRotated(both, range_x=math.pi, prob=0.2, keep_size=True, mode=spatial_modes, padding_mode="zeros"),
        mt.RandZoomd(both, prob=0.2, min_zoom=0.7, max_zoom=1.4, mode=spatial_modes, padding_mode="constant",
                     keep_size=True),
        mt.RandGaussianNoised(IMAGE, prob=0.1, std=math.sqrt(0.1)),
        mt.RandGaussianSmoothd(IMAGE, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), prob=0.2),
        mt.RandScaleIntensityd(IMAGE, factors=0.25, prob=0.15),
        mt.RandScaleIntensityFixedMeand(IMAGE, factors=0.25, preserve_range=True, prob=0.15),
        mt.RandSimulateLowResolutiond(IMAGE, prob=0.25, zoom_range=(0.5, 1.0), upsample_mode="bicubic"),
        mt.RandAdjustContrastd(IMAGE, prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        mt.RandAdjustContrastd(IMAGE, prob=0.3, gamma=(0.7, 1.5), retain_stats=True),
        *[mt.RandFlipd(both, prob=0.5, spatial_axis=axis) for axis in mirror_axes],
    ])
