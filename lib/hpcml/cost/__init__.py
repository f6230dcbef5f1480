"""Cost review: a dated price snapshot with live refresh (:mod:`prices`), pure cost models
(:mod:`models`), and the measured inputs they start from (:mod:`measured`)."""
