"""Grad-CAM (Selvaraju et al., 2017) over a model's ``cam_layer``, its last convolutional stage.

The map for class c is ReLU(sum_k w_k A_k), where A is the layer's activation and w_k the
spatial mean of d logit_c / d A_k; it is upsampled bilinearly onto the input and scaled from its minimum to its
maximum, [0, 1].
Upsampling places cell i over pixels [i * stride, (i + 1) * stride), the layer's own stride: a net
whose pooling floors the map (airbench: 32 -> 31 -> 15 -> 7 -> 3, stride 8) would otherwise be
stretched over the whole image, each cell drawn up to 6 pixels from the pixels it reads.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Side of the inputs the layer's stride is measured on: a multiple of the strides of the registered networks (8 and 4)
PROBE_SIDE = 64


class NoSpatialMap(ValueError):
    """The model has no layer whose activation is a spatial map of more than one cell: Grad-CAM has nothing to show."""


class GradCAM:
    """``GradCAM(model)(images, targets)`` -> maps [N, H, W] in [0, 1]; the model's weights are untouched."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        self.model = model
        if layer is None:
            layer = getattr(model, "cam_layer", None)
            if not isinstance(layer, nn.Module):
                raise NoSpatialMap(f"{type(model).__name__} names no layer for Grad-CAM (no cam_layer)")
        self.layer: nn.Module = layer
        self._activation: torch.Tensor | None = None
        self._gradient: torch.Tensor | None = None
        # (height, width) of the layer's activation in the last call: the maps' real resolution
        self.map_size: tuple[int, int] | None = None
        # input pixels between neighbouring cells of that map (rows, columns)
        self.stride: tuple[float, float] | None = None
        # batches the layer saw per image (an ensemble member's test-time views); the maps are of the first, unaugmented
        self.views = 1

    def _forward_hook(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._activation = output
        output.register_hook(self._backward_hook)

    def _backward_hook(self, grad: torch.Tensor) -> None:
        self._gradient = grad

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
        """Maps for ``targets`` (default: each image's predicted class); ``images`` float [N, 3, H, W] in [0, 1].
        NoSpatialMap where the layer's activation is no [N, C, h, w] map of more than one cell."""
        was_training = self.model.training
        self.model.eval()
        try:  # the model leaves in the mode it came in, a refused layer's too
            activation, gradient = self._activation_and_gradient(images, targets)
            stride = self.stride = self._stride(images)
        finally:
            self.model.train(was_training)
        assert self.map_size is not None
        weights = gradient.float().mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activation.float()).sum(dim=1)).cpu()
        height, width = images.shape[-2:]
        rows, cols = (
            _upsampling(height, self.map_size[0], stride[0]),
            _upsampling(width, self.map_size[1], stride[1]),
        )
        with torch.autocast("cpu", enabled=False):  # under a caller's bf16 autocast the product would be bf16
            cam = rows @ cam @ cols.T
        low = cam.amin(dim=(1, 2), keepdim=True)
        high = cam.amax(dim=(1, 2), keepdim=True)
        span = high - low
        # All zeros only where there is no positive evidence (a division by zero otherwise); evidence spread evenly
        # is all ones, not drawn as none.
        flat = torch.where(high > 0, torch.ones_like(cam), torch.zeros_like(cam))
        cam = torch.where(span > 0, (cam - low) / span.clamp_min(1e-12), flat)
        return cam.numpy()

    def _activation_and_gradient(
        self, images: torch.Tensor, targets: torch.Tensor | np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's activation for the images and the gradient of their targets' logits with respect to it."""
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
                activation = self._activation
                if activation.dim() != 4 or activation.shape[-2:].numel() < 2:
                    raise NoSpatialMap(
                        f"{type(self.layer).__name__}'s activation is {tuple(activation.shape)}, no spatial map"
                    )
                # inputs= limits the backward pass to the hooked activation: no parameter .grad is written.
                torch.autograd.backward(score, inputs=[activation])
                assert self._gradient is not None
            activation, gradient = activation.detach(), self._gradient.detach()
            # A member's ViewAverage sends its views through as one batch, the image itself first.
            self.views = activation.shape[0] // len(images)
            self.map_size = (int(activation.shape[-2]), int(activation.shape[-1]))
            return activation[: len(images)], gradient[: len(images)]
        finally:
            handle.remove()
            self._activation = self._gradient = None

    def _stride(self, images: torch.Tensor) -> tuple[float, float]:
        """The layer's stride, from its maps of two inputs of sides multiples of PROBE_SIDE, PROBE_SIDE apart: the
        floors of pooling and the ceilings of padded strided convolutions cancel in the difference. Measured on the
        image's own side they would not: a ResNet maps 28 and 56 pixels to 4 and 7 cells, 9.3 pixels apart, not 8.
        A model taking one input size only (ViT) tiles it exactly: the image size over the map's."""
        assert self.map_size is not None
        height, width = images.shape[-2:]
        base = PROBE_SIDE * math.ceil(height / PROBE_SIDE), PROBE_SIDE * math.ceil(width / PROBE_SIDE)
        seen: list[torch.Size] = []
        handle = self.layer.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
        maps = []
        try:
            with torch.no_grad():
                for extra in (0, PROBE_SIDE):
                    seen.clear()
                    self.model(images.new_zeros(1, images.shape[1], base[0] + extra, base[1] + extra))
                    maps.append(seen[0][-2:])
        except (RuntimeError, ValueError):
            maps = []
        finally:
            handle.remove()
        if maps and maps[1][0] > maps[0][0] and maps[1][1] > maps[0][1]:
            return PROBE_SIDE / (maps[1][0] - maps[0][0]), PROBE_SIDE / (maps[1][1] - maps[0][1])
        return height / self.map_size[0], width / self.map_size[1]


def _upsampling(size: int, cells: int, stride: float) -> torch.Tensor:
    """[size, cells] bilinear weights placing cell i's centre at pixel (i + 0.5) * stride - 0.5; pixels beyond the
    last centre take the border cell's value. With stride size / cells: ``F.interpolate(align_corners=False)``."""
    source = ((torch.arange(size, dtype=torch.float64) + 0.5) / stride - 0.5).clamp(0, cells - 1)
    low = source.floor().long().clamp(max=cells - 1)
    high = (low + 1).clamp(max=cells - 1)
    frac = source - low
    weights = torch.zeros(size, cells, dtype=torch.float64)
    weights[torch.arange(size), low] += 1 - frac
    weights[torch.arange(size), high] += frac
    return weights.float()


def gradcam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    return GradCAM(model)(images, targets)
