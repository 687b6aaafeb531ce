"""The reference pipeline for parity tests: LegSegNet's per-slice preprocessing with OpenCV, then nnunetv2's
nnUNetPredictor one slice at a time, as LegSegNet's own app runs it. Test-only: needs nnunetv2 and
opencv-python-headless."""

from __future__ import annotations

import numpy as np
import torch

LEGSEGNET_SPACING = (999, 1, 1)  # what nnU-Net's 2D PNG reader reports for LegSegNet's 8-bit slices


def reference_uint8(hu_slice: np.ndarray, use_ipp: bool = False) -> np.ndarray:
    """HU window, truncating uint8 cast and cv2 bicubic resize to 256x256.

    OpenCV routes 8-bit bicubic resizes to Intel IPP on x86 unless told not to; IPP rounds differently from
    OpenCV's own (documented, portable) arithmetic for scale factors other than powers of two.
    """
    x = np.clip(hu_slice.astype(np.float32), -200.0, 200.0)
    image = ((x - -200.0) / 400.0 * 255.0).astype(np.uint8)
    if image.shape == (256, 256):
        return image
    return opencv_resize(image, use_ipp)


def opencv_resize(image, use_ipp):
    """cv2.resize to 256x256 bicubic, with Intel IPP on or off."""
    import cv2

    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(use_ipp)
    try:
        return cv2.resize(image, (256, 256), interpolation=cv2.INTER_CUBIC)
    finally:
        cv2.ipp.setUseIPP(previous)


class ReferencePredictor:
    def __init__(self, model_folder, folds=(0,), tta=False, checkpoint_name="checkpoint_final.pth", device="cpu"):
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        device = torch.device(device)
        self.predictor = nnUNetPredictor(
            tile_step_size=0.5, use_gaussian=True, use_mirroring=tta, perform_everything_on_device=device.type == "cuda",
            device=device, verbose=False, allow_tqdm=False,
        )
        self.predictor.initialize_from_trained_model_folder(
            str(model_folder), use_folds=tuple(folds), checkpoint_name=checkpoint_name
        )

    def logits_and_labels(self, image_uint8: np.ndarray):
        """Cropped fp16 logits [classes, rows, cols], the crop bbox and nnU-Net's labels on the 256 grid."""
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        predictor = self.predictor
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(
            image_uint8.astype(np.float32)[None, None], None, {"spacing": LEGSEGNET_SPACING},
            predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json,
        )
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data).float()).cpu()
        labels = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, properties
        )
        return logits[:, 0], properties["bbox_used_for_cropping"][1:], labels[0]


def native_reference_labels(predictor: "ReferencePredictor", slice_2d: np.ndarray, pixel_spacing_mm) -> np.ndarray:
    """nnU-Net's labels for one 2D slice of real intensities given as a (1, 1, rows, cols) image with spacing
    (999, rows mm, columns mm), the way nnU-Net reads a 2D image."""
    image = np.asarray(slice_2d, dtype=np.float32)[None, None]
    spacing = (999.0, *(float(value) for value in pixel_spacing_mm))
    return predictor.predictor.predict_single_npy_array(image, {"spacing": spacing})[0]
