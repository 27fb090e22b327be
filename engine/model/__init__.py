"""The network and everything that runs it: frontend, SF-NFNet, branches, checkpoints, embedding, the torch transforms, invariance curves and the match.

The only engine room that imports torch (network, frontend, branches, torch_backend,
transforms); embed, checkpoint, stft and onnx_backend never do, so that the bundled app runs
the model through onnxruntime without it.
"""
