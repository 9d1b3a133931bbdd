"""Offline export stage: backbones, the fused cluster-map graph and SAM 3 parts to ONNX, and
ONNX to TensorRT engines (built on the machine that runs them).

Modules: ``onnx_export`` (export + numerical check against torch), ``fused`` (normalise ->
backbone -> colour -> nearest centre in one graph), ``sam3_export`` (SAM 3 in three parts),
``tensorrt_build`` (engine naming, cache validation, profiles, builds), ``bench`` and ``cli``.
"""
