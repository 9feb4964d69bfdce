"""Device -> host copies that never make the step loop wait for the device.

A preview is computed on the device (a few small kernels queued behind the step), copied
into a pinned host buffer with `non_blocking=True`, and marked with a CUDA event. It is
turned into PIL images one step later, when the event has long passed, or when someone
reads the frames. On the CPU there is nothing to wait for: the copy resolves at once, so a
live view shows every step's preview at that step.
"""
from __future__ import annotations


class PendingCopies:
    """At most one copy in flight; `resolve()` finishes it and hands its rows to their owners."""

    def __init__(self):
        self._pending = None          # (host tensor, event or None, targets, extras)
        self._buffers = {}            # (shape) -> pinned host tensor, reused every step

    def submit(self, rgb8, targets, scalars=()):
        """Queue `rgb8` ([N, H, W, 3] uint8, any device): row i goes to `targets[i]` (a list).

        `scalars` are (list, index, value) triples: a device scalar (a timestep) written as a
        float into list[index] when the copy resolves, so nothing here calls float() on it.
        """
        self.resolve()
        event = None
        if rgb8.device.type == "cuda":
            import torch

            key = tuple(rgb8.shape)
            host = self._buffers.get(key)
            if host is None:
                host = self._buffers[key] = torch.empty(key, dtype=torch.uint8, pin_memory=True)
            host.copy_(rgb8, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = rgb8
        self._pending = (host, event, list(targets), list(scalars))
        if event is None:
            self.resolve()

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def resolve(self) -> None:
        """Finish the copy in flight (waits only for the kernels queued before it)."""
        if self._pending is None:
            return
        host, event, targets, scalars = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        for image, target in zip(rgb8_to_images(host), targets):
            target.append(image)
        for values, index, value in scalars:
            values[index] = float(value)


def rgb8_to_images(rgb8) -> list:
    """[N, H, W, 3] uint8 tensor (host) -> PIL images (copies: the buffer may be reused)."""
    from PIL import Image

    return [Image.fromarray(a.copy()) for a in rgb8.cpu().numpy()]


def host_scalar(value):
    """A float now when that costs no device sync, else the value itself (converted later)."""
    if value is None or isinstance(value, (int, float)):
        return value
    if getattr(value, "device", None) is not None and value.device.type != "cpu":
        return value
    return float(value)
