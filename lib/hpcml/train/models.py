"""Models defined in lib (no torchvision): a small MNIST CNN and the ResNet family.

``make_model("cnn", width=32, depth=2, dropout=0.1)`` is the 28×28 digit classifier the
training stage trains; ``make_model("resnet50")`` / ``"resnet18"`` are the standard
ImageNet ResNets (bottleneck / basic blocks, He et al. 2015) used by the synthetic
throughput benchmark. :func:`train_flops_per_sample` counts the FLOPs of one training
step (forward + backward) with ``torch.utils.flop_counter.FlopCounterMode`` — the
numerator of model-FLOPs utilisation (MFU).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

ARCHS = ("cnn", "mlp", "resnet18", "resnet50")


class MnistMLP(nn.Module):
    """``depth`` fully connected ReLU layers of ``hidden`` units on the flat 784 pixels, then
    the classifier. Wide (4096) it is weight-bound: at batch 1 every call streams all its
    weights from memory for two FLOPs per weight read, as in a ranking model or a
    transformer's feed-forward block. Input: (N, 784) or (N, 1, 28, 28).
    """

    def __init__(self, hidden: int = 4096, depth: int = 3, num_classes: int = 10):
        super().__init__()
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"mlp hidden must be an integer >= 1, got {hidden!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"mlp depth must be an integer >= 1, got {depth!r}")
        layers: list[nn.Module] = []
        c_in = 784
        for _ in range(depth):
            layers += [nn.Linear(c_in, hidden), nn.ReLU(inplace=True)]
            c_in = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.reshape(x.shape[0], -1)))


class MnistCNN(nn.Module):
    """``depth`` conv blocks (conv3×3 → BN → ReLU → max-pool 2), then a 2-layer head.

    Channels double per block from ``width``. Input: (N, 784) or (N, 1, 28, 28).
    """

    def __init__(self, width: int = 32, depth: int = 2, dropout: float = 0.1, num_classes: int = 10):
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"cnn width must be an integer >= 1, got {width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 4:
            raise ValueError(f"cnn depth must be an integer in [1, 4] (28 px halves per block), got {depth!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"cnn dropout must be in [0, 1), got {dropout!r}")
        layers: list[nn.Module] = []
        c_in, size = 1, 28
        for i in range(depth):
            c_out = width * 2**i
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * size * size, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.view(-1, 1, 28, 28)
        return self.head(self.features(x))


def _bn(c: int, zero: bool = False) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    if zero:  # zero-init the last BN of each residual branch (Goyal et al. 2017)
        nn.init.zeros_(bn.weight)
    return bn


class BasicBlock(nn.Module):
    """Two 3×3 convs with an identity (or 1×1 projection) shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = _bn(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = _bn(c, zero=True)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != c:
            self.down = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), _bn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (stride here, "ResNet v1.5") → 1×1 expand ×4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        c_out = c * self.expansion
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=False)
        self.bn1 = _bn(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = _bn(c)
        self.conv3 = nn.Conv2d(c, c_out, 1, bias=False)
        self.bn3 = _bn(c_out, zero=True)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _bn(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    """ResNet: 7×7/2 stem, max-pool, four stages (64·2^i channels), global pool, FC."""

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, base_width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(base_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, c_in = [], base_width
        for i, n in enumerate(layers):
            c = base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, c, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def _resnet(block: type, layers: list[int]) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_channels: int = 3, base_width: int = 64,
              channels_last: bool = False) -> nn.Module:
        m = ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, base_width=base_width)
        return m.to(memory_format=torch.channels_last) if channels_last else m

    return build


def _cnn(width: int = 32, depth: int = 2, dropout: float = 0.1, num_classes: int = 10) -> nn.Module:
    return MnistCNN(width=width, depth=depth, dropout=dropout, num_classes=num_classes)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "cnn": _cnn,
    "mlp": MnistMLP,
    "resnet18": _resnet(BasicBlock, [2, 2, 2, 2]),
    "resnet50": _resnet(Bottleneck, [3, 4, 6, 3]),
}


def make_model(arch: str = "cnn", **kw: Any) -> nn.Module:
    """Build a model by name.

    Args:
        arch: ``"cnn"`` (kwargs ``width=32, depth=2, dropout=0.1``), ``"mlp"`` (kwargs
            ``hidden=4096, depth=3``), ``"resnet18"`` or
            ``"resnet50"`` (kwargs ``num_classes=1000, in_channels=3, base_width=64,
            channels_last=False``).

    Returns:
        The freshly initialised module (seed torch first for a reproducible init).
    """
    if arch not in _REGISTRY:
        raise ValueError(f"make_model: unknown arch {arch!r}; expected one of {ARCHS}")
    try:
        return _REGISTRY[arch](**kw)
    except TypeError as e:
        raise ValueError(f"make_model({arch!r}): bad keyword arguments {sorted(kw)}: {e}") from None


def model_config_from(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``make_model`` kwargs (plus ``arch``) a training config / TrainSpec dict implies.

    The CNN takes width/depth/dropout; a ResNet trained on the MNIST shards gets one input
    channel and ten classes.
    """
    arch = cfg.get("arch", "cnn")
    if arch == "cnn":
        return {"arch": "cnn", "width": int(cfg.get("width", 32)), "depth": int(cfg.get("depth", 2)),
                "dropout": float(cfg.get("dropout", 0.1))}
    if arch == "mlp":
        return {"arch": "mlp", "hidden": int(cfg.get("hidden", 4096)), "depth": int(cfg.get("depth", 3))}
    return {"arch": arch, "num_classes": 10, "in_channels": 1}


def build_from_config(model_config: dict[str, Any]) -> nn.Module:
    """``make_model`` from a dict holding ``arch`` and its kwargs (as saved in artifacts)."""
    kw = dict(model_config)
    return make_model(kw.pop("arch", "cnn"), **kw)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_flops_per_sample(model: nn.Module, input_shape: tuple[int, ...], batch: int = 2,
                           channels_last: bool = False) -> float:
    """FLOPs of one training step (forward + backward) per sample, counted by torch.

    ``FlopCounterMode`` counts matmul/conv/bmm FLOPs (2 per multiply-add) in the
    forward and the backward pass; element-wise ops (BN, ReLU) are not counted, as in
    the usual MFU convention. The model's parameters and mode are left unchanged.

    Args:
        model: the module (its train/eval mode is restored).
        input_shape: one sample's shape, e.g. ``(1, 28, 28)`` or ``(3, 224, 224)``.
        batch: batch size used for the count (FLOPs are linear in it).
        channels_last: use channels-last input.
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.train()
    x = torch.randn(batch, *input_shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with FlopCounterMode(display=False) as fc:
            out = model(x)
            out.float().sum().backward()
        total = fc.get_total_flops()
    finally:
        model.load_state_dict(state)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return total / batch
