"""The networks and what every part downstream uses of them: the model interface
(``interface``: ``ModelTraits`` and the ``RestorationModel`` protocol), the fused
transfer-learning network and its ImageNet backbones, the field's community models through
spandrel, weight files, ``model.json`` (``metadata``) and checkpoints, and the Predictor that
restores an image with any of them (tiling, precision, self-ensemble, strength)."""
