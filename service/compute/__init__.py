"""The compute: the one registry of model kinds (kinds: what the proof checks for a kind and how it
is served), the kinds' inference and decisions (inference), the smoother's convolution paths
(convolve) and the engines (ONNX Runtime, TorchScript).

May import: service.base, service.settings, contract (torch only lazily, in the TorchScript engine).
"""
