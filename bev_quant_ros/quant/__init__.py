"""INT8 quantization toolkit: calibration, ranges, sensitivity, precision plan, Q/DQ export."""
