"""The PyTorch reference for ``python -m alexnet_jax.benchmark``: one training step (SGD, momentum 0.9,
weight decay 5e-4, cross-entropy) on device-resident synthetic data, for either network:

- ``--net=torchvision`` (default): torchvision's AlexNet layout (``configs/torchvision.py``): one tower,
  64-192-384-256-256, no LRN.
- ``--net=paper``: the NIPS 2012 paper's two-tower network (``configs/paper.py``) on one device, as a
  PyTorch user would write it: conv2, conv4 and conv5 as ``groups=2`` convolutions (each tower reads its
  own maps), conv3 and the FC layers full (they read both towers), and ``nn.LocalResponseNorm`` on each
  tower's maps apart.

    python benchmarks/torch_alexnet.py --device=cpu --batch_size=32 [--net=paper]
    python benchmarks/torch_alexnet.py --device=cuda --batch_size=1024 --bf16 --channels_last [--compile] [--net=paper]

PyTorch is an optional extra (``pip install torch``); both networks are written out here (the torchvision
one identical to torchvision.models.alexnet, with its state-dict keys) so torchvision is not needed.
``tests/test_torch_reference.py`` checks that each gives alexnet_jax's logits for the same weights.
Prints images/s (median of --repeats runs) and a JSON line. Like the alexnet_jax tools, it restarts
itself with glibc's huge-page malloc (``alexnet_jax.host_memory``) when alexnet_jax is importable, so
both sides run with the same allocator settings; ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` runs it with
glibc's defaults.
"""

import argparse
import collections
import json
import time

try:
  from alexnet_jax.platform import cpu_info, host_memory
except ImportError:  # alexnet_jax not importable: glibc's defaults
  cpu_info = host_memory = None
if host_memory is not None and __name__ == "__main__":
  # before importing torch, so that happens once
  host_memory.restart_with_huge_page_malloc()

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

NETS = ("torchvision", "paper")


def alexnet(num_classes: int = 1000) -> nn.Module:
  """torchvision.models.alexnet: the same modules under the same state-dict keys (``features.0`` ...
  ``classifier.6``), so ``alexnet_jax.convert.from_torchvision`` reads its ``state_dict()``.
  """
  features = nn.Sequential(
      nn.Conv2d(3, 64, 11, 4, 2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2),
      nn.Conv2d(64, 192, 5, padding=2),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2),
      nn.Conv2d(192, 384, 3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(384, 256, 3, padding=1),
      nn.ReLU(inplace=True),
      nn.Conv2d(256, 256, 3, padding=1),
      nn.ReLU(inplace=True),
      nn.MaxPool2d(3, 2),
  )
  classifier = nn.Sequential(
      nn.Dropout(0.5),
      nn.Linear(256 * 6 * 6, 4096),
      nn.ReLU(inplace=True),
      nn.Dropout(0.5),
      nn.Linear(4096, 4096),
      nn.ReLU(inplace=True),
      nn.Linear(4096, num_classes),
  )
  return nn.Sequential(
      collections.OrderedDict(
          features=features,
          avgpool=nn.AdaptiveAvgPool2d((6, 6)),
          flatten=nn.Flatten(),
          classifier=classifier,
      )
  )


class PaperAlexNet(nn.Module):
  """The paper's network (Krizhevsky et al. 2012, Figure 2 and §3) on one device, written from the paper
  rather than from alexnet_jax, to be a second implementation: 60,965,224 parameters.

  A tower's kernels are the first or second half of each layer's output channels (tower 1 first), as in
  ``groups=2`` convolutions. Dropout follows fc6's and fc7's ReLUs (§4.2); ``model.eval()`` turns it off.
  """

  towers = 2

  def __init__(self, num_classes: int = 1000):
    super().__init__()
    # §3.5: 96 kernels of 11x11x3, stride 4, on the 224x224x3 image; both towers read the image, so
    # one convolution computes both towers' 48. The padding is not in the paper: configs/paper.py pads
    # 2 before and 1 after (conv1_padding) for §3.5's 55x55; padding 2 on every side gives the same
    # output (11x11/4 never reads the last padded row or column) without a padded copy of the input.
    self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=2)
    # §3.5: conv2, conv4, conv5 read only their own tower's maps: groups=2.
    self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
    # §3.2: conv3 reads both towers' maps (the GPUs communicate): a full convolution.
    self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
    self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
    self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
    # §3.3: b = a / (k + alpha * sum of a^2 over n adjacent maps)^beta with k=2, n=5, alpha=1e-4,
    # beta=0.75. nn.LocalResponseNorm divides alpha by n (alpha/n * sum), so it gets alpha * n.
    self.lrn = nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0)
    # §3.5: fc6 and fc7 each 4096 (2 x 2048), each unit reading both towers' previous layer: full
    # layers. fc8: 1000 classes.
    self.fc6 = nn.Linear(256 * 6 * 6, 4096)
    self.fc7 = nn.Linear(4096, 4096)
    self.fc8 = nn.Linear(4096, num_classes)
    self.dropout = nn.Dropout(0.5)

  def tower_lrn(self, x: torch.Tensor) -> torch.Tensor:
    """§3.3 with §3.2: each GPU normalised its own maps, so the window never reaches from one tower's
    channels into the other's."""
    return torch.cat([self.lrn(t) for t in x.chunk(self.towers, dim=1)], 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    # §3.4: overlapping max pooling, z=3, s=2, after each LRN and after conv5.
    pool = lambda x: F.max_pool2d(x, 3, 2)
    relu = lambda x: F.relu(x, inplace=True)
    x = pool(self.tower_lrn(relu(self.conv1(x))))  # 55x55 -> 27x27x96
    x = pool(self.tower_lrn(relu(self.conv2(x))))  # 27x27 -> 13x13x256
    x = relu(self.conv3(x))
    x = relu(self.conv4(x))
    x = pool(relu(self.conv5(x)))  # 13x13 -> 6x6x256
    x = torch.flatten(x, 1)  # (C, H, W) order
    x = self.dropout(relu(self.fc6(x)))
    x = self.dropout(relu(self.fc7(x)))
    return self.fc8(x)


def network(net: str, num_classes: int = 1000) -> nn.Module:
  if net == "torchvision":
    return alexnet(num_classes)
  if net == "paper":
    return PaperAlexNet(num_classes)
  raise ValueError(f"--net must be one of {NETS}, got {net!r}")


def make_step(model, optimizer, images, labels, bf16: bool):
  """One training step: forward (bfloat16 autocast if asked), cross-entropy, backward, SGD update."""
  loss_fn = nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
      loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss

  return step


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--net", default="torchvision", choices=NETS)
  parser.add_argument("--device", default="cpu")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument(
      "--bf16",
      action="store_true",
      help="autocast to bfloat16 (parameters stay float32)",
  )
  parser.add_argument("--channels_last", action="store_true")
  parser.add_argument("--compile", action="store_true")
  parser.add_argument(
      "--no_cudnn_benchmark",
      action="store_true",
      help="keep cuDNN's heuristic algorithm choice (by default it times the candidates once, as XLA "
      "autotunes its convolutions)",
  )
  args = parser.parse_args()

  device = torch.device(args.device)
  torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
  model = network(args.net).to(device)
  memory_format = (
      torch.channels_last if args.channels_last else torch.contiguous_format
  )
  model = model.to(memory_format=memory_format)
  optimizer = torch.optim.SGD(
      model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
  )
  images = torch.randn(args.batch_size, 3, 224, 224, device=device).to(
      memory_format=memory_format
  )
  labels = torch.randint(0, 1000, (args.batch_size,), device=device)
  step = make_step(model, optimizer, images, labels, args.bf16)
  if args.compile:
    step = torch.compile(step)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  start = time.perf_counter()
  for _ in range(3):  # warm-up (and compilation)
    step()
  sync()
  warmup_seconds = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    for _ in range(args.steps):
      loss = step()
    sync()
    times.append(time.perf_counter() - start)
  rate = args.steps * args.batch_size / float(np.median(times))
  name = (
      torch.cuda.get_device_name(device)
      if device.type == "cuda"
      else args.device
  )
  layout = {"torchvision": "torchvision layout", "paper": "paper, 2 towers"}
  print(
      f"PyTorch {torch.__version__} AlexNet ({layout[args.net]}) train step on {name}: {rate:,.0f} images/s"
  )
  print(
      json.dumps(
          {
              "torch_train_images_per_sec": rate,
              "net": args.net,
              "batch_size": args.batch_size,
              "bf16": args.bf16,
              "channels_last": args.channels_last,
              "compile": args.compile,
              "cudnn_benchmark": device.type == "cuda"
              and torch.backends.cudnn.benchmark,
              "warmup_seconds": warmup_seconds,
              "loss": float(loss.detach()),
              "parameters": sum(p.numel() for p in model.parameters()),
              "device": name,
              "cpu": cpu_info.describe() if cpu_info else None,
              "torch": torch.__version__,
              "huge_page_malloc": bool(
                  host_memory and host_memory.huge_page_malloc_enabled()
              ),
          }
      )
  )


if __name__ == "__main__":
  main()
