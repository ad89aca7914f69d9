"""Export checkpoints to self-describing ONNX models (FP32, FP16, INT8) and prove their accuracy."""
