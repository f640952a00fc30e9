"""wormflow: train, run and compare three worm-image analysis methods.

The methods follow the technical report "Worm Image Analysis": a convolutional
VAE with a colour heuristic, a DCGAN with an f-AnoGAN encoder, and a ResNet-50
classifier trained with focal loss (one module each in :mod:`wormflow.methods`,
beside the dark-pixel floor).  Every method turns an RGB image into a score
where *higher means more likely ``wormed``* (class 1); a threshold chosen on the
dev split turns scores into predictions.
"""

__version__ = "0.1.0"

CLASSES = ("no_wormed", "wormed")
