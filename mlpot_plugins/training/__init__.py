"""Training, calibration and export of equivariant potentials (``mlpot train``, ``mlpot export``)."""
