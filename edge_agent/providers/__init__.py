"""What this device can run: ONNX Runtime's view of providers and devices, and the variant choice."""
