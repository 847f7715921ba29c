"""Calibration: INT8 (Q/DQ) and FP16 variants of a bundle behind an accuracy gate, and TensorRT engines.

    from vlfront.calibration import calibrate_bundle
    section = calibrate_bundle("build/default")                  # default photos, minmax
    section = calibrate_bundle("build/default", data="my_images.parquet", method="percentile")

See docs/calibration.md.
"""

from vlfront.calibration.calibrate import calibrate_bundle
from vlfront.calibration.data import CalibrationSet, load_calibration_set

__all__ = ["calibrate_bundle", "load_calibration_set", "CalibrationSet"]
