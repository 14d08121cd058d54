"""PyTorch reference for the speed table: the same SimCLR training step, compiled with torch.compile.

    /path/to/torch/python benchmarks/torch_step.py --backbone resnet18 --size 32 --batch 128 \
        [--stem small|imagenet] [--precision float32|mixed_bfloat16] [--steps 5] [--warmup_steps 2]

Not part of simclr-tf and not installed by it: PyTorch is only the yardstick of the README's speed
table ("Speed"). `benchmarks/pretrain_throughput.py --torch_python=PATH` runs this script with
another interpreter that has torch (e.g. a separate venv: `pip install torch`), interleaved with its
own measurements, and prints its figure beside the project's training step.

The step is what `--task=pretrain` runs with its defaults, on one synthetic batch of two float32
views (no decoding, no augmentation, as the project's "training step" column): ResNet-18 / -50
(torchvision's layout, small stem = 3x3 stride-1 conv and no max pool), the projection head of the
project (Dense without bias -> BN -> ReLU as wide as h, then Dense -> BN without beta, 128 outputs),
NT-Xent over the 2N views at temperature 0.2, backward, and LARS (momentum 0.9, trust coefficient
1e-3, weight decay 1e-6, BN parameters and biases excluded) written with torch's foreach ops.
torch.compile compiles the forward pass and loss (their backward follows through AOTAutograd); the
optimizer step runs eagerly. With mixed_bfloat16 the forward pass runs under CPU/GPU autocast in
bfloat16, the loss in float32. Prints one JSON line: images/s (source images, each two views),
the compile time and the CPU time.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time

import torch
from torch import nn
import torch.nn.functional as F


def conv_bn(in_ch, out_ch, kernel, stride):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch))


class Basic(nn.Module):
    expansion = 1

    def __init__(self, in_ch, width, stride):
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(conv_bn(in_ch, width, 3, stride), nn.ReLU(inplace=True), conv_bn(width, out_ch, 3, 1))
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch, width, stride):
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(conv_bn(in_ch, width, 1, 1), nn.ReLU(inplace=True), conv_bn(width, width, 3, stride),
                                  nn.ReLU(inplace=True), conv_bn(width, out_ch, 1, 1))
        self.shortcut = conv_bn(in_ch, out_ch, 1, stride) if stride != 1 or in_ch != out_ch else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


LAYOUTS = {"resnet18": (Basic, (2, 2, 2, 2)), "resnet34": (Basic, (3, 4, 6, 3)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


def resnet(name, small_stem):
    """Encoder: images [N, 3, H, W] -> h [N, C] after global average pooling."""
    block, counts = LAYOUTS[name]
    stem = ([conv_bn(3, 64, 3, 1), nn.ReLU(inplace=True)] if small_stem else
            [conv_bn(3, 64, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)])
    stages, in_ch = [], 64
    for i, count in enumerate(counts):
        width = 64 * 2 ** i
        for j in range(count):
            stages.append(block(in_ch, width, 2 if j == 0 and i > 0 else 1))
            in_ch = width * block.expansion
    return nn.Sequential(*stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten()), in_ch


def projection_head(dim, out_dim=128):
    last_bn = nn.BatchNorm1d(out_dim)
    last_bn.bias.requires_grad_(False)  # BN without beta on the output, as the project's head
    return nn.Sequential(nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
                         nn.Linear(dim, out_dim, bias=False), last_bn)


def nt_xent(z, temperature):
    """Mean NT-Xent over the 2N views of z = [view 1; view 2]."""
    z = F.normalize(z.float(), dim=1)
    n = z.shape[0] // 2
    logits = z @ z.t() / temperature
    logits = logits - 1e9 * torch.eye(2 * n, device=z.device)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class Lars:
    """LARS (You et al., 2017) as in SimCLR: momentum on the trust-ratio-scaled gradient plus weight decay."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=1e-3):
        self.adapted = [p for p in params if p.requires_grad and p.ndim > 1]   # conv and dense kernels
        self.plain = [p for p in params if p.requires_grad and p.ndim <= 1]    # BN parameters: no decay, no LARS
        self.lr, self.momentum, self.weight_decay, self.eta = lr, momentum, weight_decay, eta
        self.buffers = {id(p): torch.zeros_like(p) for p in self.adapted + self.plain}

    @torch.no_grad()
    def step(self):
        grads = [p.grad + self.weight_decay * p for p in self.adapted]
        w_norms = torch._foreach_norm(self.adapted)
        g_norms = torch._foreach_norm(grads)
        for p, g, w_norm, g_norm in zip(self.adapted, grads, w_norms, g_norms):
            trust = torch.where((w_norm > 0) & (g_norm > 0), self.eta * w_norm / g_norm, torch.ones_like(w_norm))
            self._apply(p, g * trust)
        for p in self.plain:
            self._apply(p, p.grad)

    def _apply(self, p, update):
        buffer = self.buffers[id(p)]
        buffer.mul_(self.momentum).add_(update)
        p.sub_(self.lr * buffer)

    def zero_grad(self, params):
        for p in params:
            p.grad = None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--backbone", choices=sorted(LAYOUTS), default="resnet18")
    add("--size", type=int, default=32, help="view side in pixels")
    add("--batch", type=int, default=128, help="source images per step (2x views)")
    add("--stem", choices=("small", "imagenet"), default=None, help="default: small at size <= 32, as the CLI")
    add("--precision", choices=("float32", "mixed_bfloat16"), default="float32")
    add("--temperature", type=float, default=0.2)
    add("--steps", type=int, default=5)
    add("--warmup_steps", type=int, default=2, help="untimed first steps (compilation)")
    add("--no_compile", action="store_true", help="eager PyTorch, for comparison")
    return parser.parse_args(argv)


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    small_stem = args.stem == "small" if args.stem else args.size <= 32
    encoder, dim = resnet(args.backbone, small_stem)
    model = nn.Sequential(encoder, projection_head(dim)).to(device).to(memory_format=torch.channels_last)
    params = list(model.parameters())
    optimizer = Lars(params, lr=0.3 * args.batch / 256)
    autocast = args.precision == "mixed_bfloat16"

    def forward_loss(views):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            z = model(views)
        return nt_xent(z, args.temperature)

    compiled = forward_loss if args.no_compile else torch.compile(forward_loss)
    generator = torch.Generator().manual_seed(0)
    views = torch.rand((2 * args.batch, 3, args.size, args.size), generator=generator)
    views = views.to(device).contiguous(memory_format=torch.channels_last)
    marks = []
    begin = time.perf_counter()
    for _ in range(args.warmup_steps + args.steps):
        loss = compiled(views)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(params)
        value = float(loss)  # waits for the step, as the project's timing callback does
        if device == "cuda":
            torch.cuda.synchronize()
        marks.append((time.perf_counter(), cpu_seconds()))
    (wall0, cpu0), (wall1, cpu1) = marks[args.warmup_steps - 1], marks[-1]
    images = args.batch * args.steps
    print(json.dumps({
        "images_per_s": images / (wall1 - wall0), "seconds": wall1 - wall0, "steps": args.steps,
        "warmup_steps": args.warmup_steps, "first_step_seconds": marks[0][0] - begin,
        "cores_busy": (cpu1 - cpu0) / (wall1 - wall0), "loss": value, "finite": value == value,
        "torch": torch.__version__, "compiled": not args.no_compile, "device": device,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
    sys.stdout.flush()
    os._exit(0)  # skip the compiler's worker-pool teardown


if __name__ == "__main__":
    main()
