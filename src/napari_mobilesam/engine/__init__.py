"""The engine: segmentation on numpy arrays with torch, no napari and no Qt.

The predictor and its transforms, image conversion, the one-call ``MobileSAM``, propagation
through stacks, embedding caches (memory and disk), and weights resolution. Imports only
``napari_mobilesam.model`` below it.
"""
