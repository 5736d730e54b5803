"""The PyTorch reference for ``python -m alexnet_jax.benchmark``: torchvision's AlexNet layout, one
training step (SGD, momentum 0.9, weight decay 5e-4, cross-entropy) on device-resident synthetic data.

    python benchmarks/torch_alexnet.py --device=cpu --batch_size=32
    python benchmarks/torch_alexnet.py --device=cuda --batch_size=1024 --bf16 --channels_last [--compile]

PyTorch is an optional extra (``pip install torch``); the network is written out here (identical to
torchvision.models.alexnet) so torchvision is not needed. Prints images/s (median of --repeats runs) and
a JSON line. Like the alexnet_jax tools, it restarts itself with glibc's huge-page malloc
(``alexnet_jax.host_memory``) when alexnet_jax is installed, so both sides run with the same allocator
settings; ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` runs it with glibc's defaults.
"""

import argparse
import json
import time

try:
  from alexnet_jax.platform import host_memory
except ImportError:  # alexnet_jax not installed: glibc's defaults
  host_memory = None
if host_memory is not None and __name__ == "__main__":
  # before importing torch, so that happens once
  host_memory.restart_with_huge_page_malloc()

import numpy as np
import torch
from torch import nn


def alexnet(num_classes: int = 1000) -> nn.Module:
  return nn.Sequential(
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
      nn.AdaptiveAvgPool2d((6, 6)),
      nn.Flatten(),
      nn.Dropout(0.5),
      nn.Linear(256 * 6 * 6, 4096),
      nn.ReLU(inplace=True),
      nn.Dropout(0.5),
      nn.Linear(4096, 4096),
      nn.ReLU(inplace=True),
      nn.Linear(4096, num_classes),
  )


def main():
  parser = argparse.ArgumentParser()
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
  args = parser.parse_args()

  device = torch.device(args.device)
  model = alexnet().to(device)
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
  loss_fn = nn.CrossEntropyLoss()

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
      loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss

  if args.compile:
    step = torch.compile(step)
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  for _ in range(3):
    step()
  sync()
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    for _ in range(args.steps):
      step()
    sync()
    times.append(time.perf_counter() - start)
  rate = args.steps * args.batch_size / float(np.median(times))
  print(
      f"PyTorch {torch.__version__} AlexNet (torchvision layout) train step on {args.device}: {rate:,.0f} images/s"
  )
  print(
      json.dumps(
          {
              "torch_train_images_per_sec": rate,
              "batch_size": args.batch_size,
              "bf16": args.bf16,
              "channels_last": args.channels_last,
              "compile": args.compile,
              "torch": torch.__version__,
              "huge_page_malloc": bool(
                  host_memory and host_memory.huge_page_malloc_enabled()
              ),
          }
      )
  )


if __name__ == "__main__":
  main()
