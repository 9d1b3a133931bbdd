"""iCAS: in-context anomaly segmentation (no rclpy).

One file per stage: ``gqs`` (greedy query selection), ``mask_pooling``, ``decoder`` (pixel
decoder + in-context transformer), ``matching`` (semantic inference and mask-level feature
matching), ``losses`` (Hungarian matching, prompt / non-target CE, mask BCE + dice), ``data``
(procedural scenes and synthetic defects), ``model`` (encoder + decoder, checkpoints),
``train``, ``prompting`` (the four prompting modes), ``evaluate``, ``export``, ``cli``.
"""
