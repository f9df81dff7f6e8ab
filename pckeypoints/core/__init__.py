"""The maths of sampling-argmax: point bases, soft/sampling-argmax, losses, the keypoint head, readouts and
temperature schedules. Needs only PyTorch and :mod:`pckeypoints.ops`."""
