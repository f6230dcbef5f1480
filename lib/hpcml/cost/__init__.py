"""Cost review: a dated price snapshot and the parsing of AWS price answers (:mod:`prices`,
pure), the live refresh that asks AWS (:mod:`price_refresh`), pure cost models (:mod:`models`),
the measured inputs they start from (:mod:`measured`) and the figures (:mod:`plots`)."""
