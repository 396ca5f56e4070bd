"""Trusted torch wrapper modules shared by models/, export/ and the service's TorchScript proof (torchref.modules)."""
