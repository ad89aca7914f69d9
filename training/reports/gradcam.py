"""Grad-CAM (Selvaraju et al., 2017) over a model's ``cam_layer``, its last convolutional stage.

The map for class c is ReLU(sum_k w_k A_k), where A is the layer's activation and w_k the
spatial mean of d logit_c / d A_k; it is upsampled bilinearly to the input size and scaled to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class GradCAM:
    """``GradCAM(model)(images, targets)`` -> maps [N, H, W] in [0, 1]; the model's weights are untouched."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        self.model = model
        # nn.Module's __getattr__ is typed Tensor | Module; every network's cam_layer is a Module property
        self.layer: nn.Module = layer if layer is not None else model.cam_layer  # type: ignore[assignment]
        self._activation: torch.Tensor | None = None
        self._gradient: torch.Tensor | None = None
        # (height, width) of the layer's activation in the last call: the maps' real resolution
        self.map_size: tuple[int, int] | None = None

    def _forward_hook(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._activation = output
        output.register_hook(self._backward_hook)

    def _backward_hook(self, grad: torch.Tensor) -> None:
        self._gradient = grad

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """Maps for ``targets`` (default: each image's predicted class); ``images`` float [N, 3, H, W] in [0, 1]."""
        was_training = self.model.training
        self.model.eval()
        handle = self.layer.register_forward_hook(self._forward_hook)
        try:
            with torch.enable_grad():
                logits = self.model(images)
                if targets is None:
                    targets = logits.argmax(1)
                targets = torch.as_tensor(targets, device=logits.device, dtype=torch.long)
                score = logits.gather(1, targets[:, None]).sum()
                # The hooks set both: the forward pass went through the layer, the backward pass back to it.
                assert self._activation is not None
                # inputs= limits the backward pass to the hooked activation: no parameter .grad is written.
                torch.autograd.backward(score, inputs=[self._activation])
                assert self._gradient is not None
            activation, gradient = self._activation.detach(), self._gradient.detach()
        finally:
            handle.remove()
            self._activation = self._gradient = None
            self.model.train(was_training)
        self.map_size = (int(activation.shape[-2]), int(activation.shape[-1]))
        weights = gradient.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activation.float()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        low = cam.amin(dim=(1, 2), keepdim=True)
        span = cam.amax(dim=(1, 2), keepdim=True) - low
        # A map with no positive evidence is all zeros rather than a division by zero.
        cam = torch.where(span > 0, (cam - low) / span.clamp_min(1e-12), torch.zeros_like(cam))
        return cam.cpu().numpy()


def gradcam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    return GradCAM(model)(images, targets)
