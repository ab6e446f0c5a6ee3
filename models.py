"""Built-in reference models for the slimgraph compiler.

Every model is defined by hand with ``torch.nn`` (no torchvision, no downloads).
Weights are random but deterministic: each factory calls ``torch.manual_seed``
first, so two calls return identical weights and identical example inputs.
Modules are returned in eval mode. Normalization layers get non-trivial
(seeded) running statistics and affine parameters, so that a bug in how a
compiler folds or lowers batch/layer norm shows up numerically.

Registry keys: ``resnet18``, ``mobilenet_v2``, ``bert_encoder``, ``digit_cnn``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

ModelAndInputs = tuple[nn.Module, tuple[torch.Tensor, ...]]

SEED = 0


def _randomize_norm_layers(module: nn.Module) -> None:
    """Give BatchNorm/LayerNorm layers seeded, non-trivial statistics and affine params."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.copy_(torch.randn_like(layer.running_mean) * 0.1)
                layer.running_var.copy_(torch.rand_like(layer.running_var) * 0.5 + 0.75)
                layer.weight.copy_(torch.rand_like(layer.weight) * 0.5 + 0.75)
                layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)
            elif isinstance(layer, nn.LayerNorm) and layer.elementwise_affine:
                layer.weight.copy_(torch.rand_like(layer.weight) * 0.5 + 0.75)
                layer.bias.copy_(torch.randn_like(layer.bias) * 0.1)


# --------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-compatible ResNet built from BasicBlocks (same state_dict names)."""

    def __init__(self, layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.in_planes = 64
        self.layer1 = self._make_layer(64, layers[0], stride=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.in_planes, planes, stride)]
        self.in_planes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def make_resnet18() -> ModelAndInputs:
    torch.manual_seed(SEED)
    model = ResNet([2, 2, 2, 2])
    _randomize_norm_layers(model)
    return model.eval(), (torch.randn(1, 3, 224, 224),)


# --------------------------------------------------------------------------- MobileNetV2


def _make_divisible(value: float, divisor: int = 8) -> int:
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU6(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU6 (torchvision's Conv2dNormActivation layout)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_ch, 1, bias=False),  # pointwise linear
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision-compatible MobileNetV2 (width 1.0; same module names)."""

    # (expand ratio t, output channels c, repeats n, first stride s)
    SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
                [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        in_ch = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in self.SETTINGS:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        features.append(ConvBNReLU6(in_ch, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.classifier(x)


def make_mobilenet_v2() -> ModelAndInputs:
    torch.manual_seed(SEED)
    model = MobileNetV2()
    _randomize_norm_layers(model)
    return model.eval(), (torch.randn(1, 3, 224, 224),)


# --------------------------------------------------------------------------- BERT encoder


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_output = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_act = nn.GELU()  # exact (erf) GELU
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = hidden_states.shape
        q = self._split_heads(self.query(hidden_states))
        k = self._split_heads(self.key(hidden_states))
        v = self._split_heads(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, seq, hidden)
        hidden_states = self.attn_norm(hidden_states + self.attn_output(context))
        ffn = self.ffn_out(self.ffn_act(self.ffn_in(hidden_states)))
        return self.ffn_norm(hidden_states + ffn)


class BertEncoder(nn.Module):
    """BERT-style encoder returning the last hidden state [batch, max_positions, hidden]."""

    def __init__(self, vocab_size: int = 1000, hidden: int = 256, num_layers: int = 4,
                 heads: int = 4, intermediate: int = 1024, max_positions: int = 128) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        # Positions come from a buffer (not torch.arange in forward); inputs must
        # therefore have exactly max_positions tokens.
        self.register_buffer("position_ids", torch.arange(max_positions).unsqueeze(0), persistent=False)
        self.embedding_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, intermediate) for _ in range(num_layers))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids)
        hidden_states = self.embedding_norm(embeddings)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


def make_bert_encoder() -> ModelAndInputs:
    torch.manual_seed(SEED)
    model = BertEncoder()
    _randomize_norm_layers(model)
    input_ids = torch.randint(0, 1000, (1, 128), dtype=torch.int64)
    return model.eval(), (input_ids,)


# --------------------------------------------------------------------------- Digit CNN


class DigitCNN(nn.Module):
    """Small CNN for 8x8 grayscale digits (scikit-learn ``load_digits`` shaped)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def make_digit_cnn() -> ModelAndInputs:
    torch.manual_seed(SEED)
    model = DigitCNN()
    _randomize_norm_layers(model)
    return model.eval(), (torch.rand(1, 1, 8, 8) * 16.0,)  # load_digits pixels lie in [0, 16]


# --------------------------------------------------------------------------- Registry


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    description: str
    factory: Callable[[], ModelAndInputs]  # returns (module in eval mode, example inputs)


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    model.name: model
    for model in (
        ReferenceModel("resnet18", "ResNet-18 (torchvision layout), input float32 [1,3,224,224]", make_resnet18),
        ReferenceModel("mobilenet_v2", "MobileNetV2 1.0 (torchvision layout), input float32 [1,3,224,224]",
                       make_mobilenet_v2),
        ReferenceModel("bert_encoder", "4-layer BERT-style encoder (hidden 256, 4 heads), input int64 ids [1,128]",
                       make_bert_encoder),
        ReferenceModel("digit_cnn", "Small CNN for 8x8 digit images, input float32 [1,1,8,8]", make_digit_cnn),
    )
}

DEFAULT_MODEL = "resnet18"


def reference_model(name: str) -> ModelAndInputs:
    """Build the named reference model; returns (module in eval mode, example inputs)."""
    if name not in REFERENCE_MODELS:
        raise ValueError(f"unknown reference model {name!r}; known models: {', '.join(sorted(REFERENCE_MODELS))}")
    return REFERENCE_MODELS[name].factory()
