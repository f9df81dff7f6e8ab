"""Evaluation: a keypoint model over a dataset (:mod:`~pckeypoints.evaluation.inference`) and the report pieces
shared by the tasks (:mod:`~pckeypoints.evaluation.report`). The metrics themselves are :mod:`pckeypoints.metrics`."""
