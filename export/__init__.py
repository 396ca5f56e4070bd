"""Export: fold constrained weights, write ONNX/TorchScript/pt2, verify, publish a model version.

Keep this file free of heavy imports: the service imports `contract.manifest` without torch.
"""
