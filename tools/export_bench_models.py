#!/usr/bin/python3
"""export_bench_models: the benchmark-only ONNX models for bench/engine_vs_ort.sh, with seeded
random weights (their outputs mean nothing; only the compute shape matters).

    /usr/bin/python3 tools/export_bench_models.py [--out bench/models] [--force]

Writes (skipped when already there, unless --force):
  unet512.onnx  a standard 4-level UNet for 1x1x512x512 input: double 3x3 Conv-BN-ReLU blocks
                with 32-64-128-256 channels (three 2x2 MaxPools down, 256 at 64x64),
                ConvTranspose 2x2/2 up, skip Concat, 1x1 head + Sigmoid; BatchNorm with random
                statistics, folded by the exporter (like models/cellseg-unet). Opset 13, input
                "input", output "output", dynamic batch axis "N". ~1.9M parameters (~7.5 MB),
                so the file is generated (bench/models/.gitignore), not committed.
  resnet18.onnx, mobilenet_v3_small.onnx (1x3x224x224 -> 1000 logits),
  deeplabv3_mobilenet_v3_large.onnx, lraspp_mobilenet_v3_large.onnx, fcn_resnet50.onnx
                (1x3x256x256 -> 21x256x256 'out' map): torchvision 0.14's models with seeded
                random weights (weights=None: nothing is downloaded; BatchNorm statistics
                randomized like unet512's), eval mode, opset 17, dynamic batch axis "N".
                These are the "models users bring" of issue 11's speed table.
"""

import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPSET = 13


def double_conv(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet4(nn.Module):
    """Standard UNet, 4 resolution levels (channels ch[0] at full size ... ch[3] at 1/8)."""

    def __init__(self, in_ch=1, out_ch=1, ch=(32, 64, 128, 256)):
        super().__init__()
        self.enc = nn.ModuleList()
        cin = in_ch
        for c in ch:
            self.enc.append(double_conv(cin, c))
            cin = c
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for hi, lo in zip(reversed(ch[1:]), reversed(ch[:-1])):
            self.up.append(nn.ConvTranspose2d(hi, lo, 2, stride=2))
            self.dec.append(double_conv(2 * lo, lo))
        self.head = nn.Conv2d(ch[0], out_ch, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], 1))
        return torch.sigmoid(self.head(x))


def randomize_bn(net, gen):
    # Random running statistics so the folded Conv weights are not a trivial rescaling.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def export_unet512(path):
    torch.manual_seed(512)
    gen = torch.Generator().manual_seed(512)
    net = UNet4()
    randomize_bn(net, gen)
    net.eval()
    x = torch.randn(1, 1, 512, 512, generator=gen)
    with torch.no_grad():
        torch.onnx.export(net, x, path, opset_version=OPSET, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          do_constant_folding=True)
    params = sum(p.numel() for p in net.parameters())
    print(f"{path}: {params} parameters, {os.path.getsize(path)} bytes")


class OutOnly(nn.Module):
    """torchvision's segmentation models return {'out': ..., 'aux': ...}: export 'out'."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)["out"]


TORCHVISION = {
    # name: (constructor, input size, wrap the dict output)
    "resnet18": ("resnet18", 224, False),
    "mobilenet_v3_small": ("mobilenet_v3_small", 224, False),
    "deeplabv3_mobilenet_v3_large": ("segmentation.deeplabv3_mobilenet_v3_large", 256, True),
    "lraspp_mobilenet_v3_large": ("segmentation.lraspp_mobilenet_v3_large", 256, True),
    "fcn_resnet50": ("segmentation.fcn_resnet50", 256, True),
}


def export_torchvision(name, path):
    import torchvision  # only needed for these models

    ctor, size, seg = TORCHVISION[name]
    fn = torchvision.models
    for part in ctor.split("."):
        fn = getattr(fn, part)
    torch.manual_seed(17)
    gen = torch.Generator().manual_seed(17)
    kw = {"weights": None}
    if seg:
        kw["weights_backbone"] = None
        if "fcn" in ctor or "deeplab" in ctor:
            kw["aux_loss"] = False
    net = fn(**kw)
    randomize_bn(net, gen)
    net = OutOnly(net) if seg else net
    net.eval()
    x = torch.randn(1, 3, size, size, generator=gen)
    with torch.no_grad():
        torch.onnx.export(net, x, path, opset_version=17, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
                          do_constant_folding=True)
    print(f"{path}: {sum(p.numel() for p in net.parameters())} parameters, "
          f"{os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "models"))
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--models", default="unet512," + ",".join(TORCHVISION),
                    help="comma-separated subset (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    for name in args.models.split(","):
        path = os.path.join(args.out, name + ".onnx")
        if os.path.exists(path) and not args.force:
            print(f"{path}: exists (use --force to rebuild)")
            continue
        if name == "unet512":
            export_unet512(path)
        else:
            export_torchvision(name, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
