"""PyTorch as a second implementation: the networks of ``benchmarks/torch_alexnet.py`` (written from
the paper and from torchvision, not from this project) give alexnet_jax's logits for the same weights.

The paper's net is checked where conventions are easy to get wrong: LRN's alpha (the paper's, not
divided by n), its window kept inside each tower, conv2/4/5 reading their own tower only (groups=2),
conv1's padding (the config's 2 before and 1 after, PyTorch's 2 on every side), fc6's (H, W, C) rows
against torch's (C, H, W) flattening. The weights are large enough for LRN to matter (the paper's
N(0, 0.01) leaves it near the identity), and the test also shows that each wrong convention would be
caught."""

import importlib.util
import os

import numpy as np
import pytest
from flax import nnx

from alexnet_jax import sharding
from alexnet_jax.model import AlexNet, AlexNetSpec
from alexnet_jax.weights import convert, fit
from conftest import ROOT, load_config

torch = pytest.importorskip(
    "torch",
    reason="PyTorch is the second implementation: pip install -e '.[test]' (torch==2.13.0, CPU build)",
)

# float32 on both sides, in different orders of summation (fc6 sums 9,216 products): agreement to
# 1e-4 of the largest logit, as the other frameworks' checks (tests/test_convert.py).
RELATIVE_TOLERANCE = 1e-4
PAPER_PARAMETERS = 60_965_224  # DESIGN.md; the paper's "60 million parameters"


def _benchmark_module():
  path = os.path.join(ROOT, "benchmarks", "torch_alexnet.py")
  spec = importlib.util.spec_from_file_location("torch_alexnet", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


torch_alexnet = _benchmark_module()


def _relative_difference(got, want) -> float:
  return float(np.abs(got - want).max() / np.abs(want).max())


def _torch_logits(net, images_nhwc) -> np.ndarray:
  net.eval()
  with torch.no_grad():
    x = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())
    return net(x).numpy()


# ----------------------------------------------------------------------------- the paper's network


def paper_state_dict(params: dict) -> dict:
  """alexnet_jax's two-tower parameters (``{layer: {kernel [T, ...], bias [T, n]}}``) as
  ``PaperAlexNet``'s state dict: tower t is the t-th block of each layer's output channels.
  """
  sd = {}
  for name, p in params.items():
    kernel, bias = np.asarray(p["kernel"]), np.asarray(p["bias"])
    if name.startswith("conv"):  # [T, kh, kw, in, out] -> [T * out, in, kh, kw]
      weight = np.concatenate([k.transpose(3, 2, 0, 1) for k in kernel])
    else:  # [T, in, out] -> [T * out, in]
      weight = np.concatenate([k.T for k in kernel])
      if name == "fc6":  # rows (H, W, C) -> torch's flattening (C, H, W)
        out = weight.shape[0]
        weight = (
            weight.reshape(out, 6, 6, -1).transpose(0, 3, 1, 2).reshape(out, -1)
        )
    sd[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
    sd[f"{name}.bias"] = torch.from_numpy(bias.reshape(-1).copy())
  return sd


def random_paper_params(spec, rng) -> dict:
  """He-scaled kernels (conv1 x40, so that LRN's sum outweighs k=2) and small random biases."""
  params = {}
  for name, (kernel_shape, bias_shape) in spec.param_shapes().items():
    std = np.sqrt(2.0 / np.prod(kernel_shape[1:-1])) * (
        40 if name == "conv1" else 1
    )
    params[name] = {
        "kernel": rng.normal(0, std, kernel_shape).astype(np.float32),
        "bias": rng.normal(0, 0.1, bias_shape).astype(np.float32),
    }
  return params


@pytest.fixture(scope="module")
def paper_case():
  config = load_config("paper").model
  config.dtype = "float32"
  model = AlexNet(config, rngs=nnx.Rngs(0), mesh=sharding.default_mesh())
  rng = np.random.default_rng(0)
  params = random_paper_params(model.spec, rng)
  images = rng.normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
  net = torch_alexnet.PaperAlexNet()
  net.load_state_dict(paper_state_dict(params))
  return config, params, images, net


def _jax_logits(config, params, images, model_devices: int) -> np.ndarray:
  mesh = sharding.make_mesh(data=1, model=model_devices)
  model = AlexNet(config, rngs=nnx.Rngs(0), mesh=mesh)
  model.load_params(fit.on_towers(mesh, params))
  model.eval()
  return np.asarray(model(images))


@pytest.fixture(scope="module")
def paper_jax_logits(paper_case):
  """alexnet_jax's logits with both towers on one device, computed once for the tests below."""
  config, params, images, _ = paper_case
  return _jax_logits(config, params, images, 1)


def test_the_paper_network_in_pytorch_has_the_papers_parameter_count():
  spec = AlexNetSpec.from_config(load_config("paper").model)
  net = torch_alexnet.PaperAlexNet()
  # At 1000 classes the two towers' fc8 halves (500 each) need no padding: the counts are the same.
  assert spec.fc8_padding == 0
  assert (
      sum(p.numel() for p in net.parameters())
      == spec.num_params()
      == PAPER_PARAMETERS
  )


@pytest.mark.parametrize("model_devices", [1, 2])
def test_the_paper_network_gives_pytorchs_logits_on_one_or_two_devices(
    paper_case, paper_jax_logits, model_devices
):
  config, params, images, net = paper_case
  got = (
      paper_jax_logits
      if model_devices == 1
      else _jax_logits(config, params, images, model_devices)
  )
  want = _torch_logits(net, images)
  assert _relative_difference(got, want) <= RELATIVE_TOLERANCE


class _AlphaOverN(torch_alexnet.PaperAlexNet):
  """PyTorch's LRN given the paper's alpha as it is: alpha / n."""

  def __init__(self):
    super().__init__()
    self.lrn = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


class _WindowAcrossTowers(torch_alexnet.PaperAlexNet):
  """One LRN window over all of the layer's maps, both towers' (Caffe's)."""

  def tower_lrn(self, x):
    return self.lrn(x)


class _Conv2ReadsBothTowers(torch_alexnet.PaperAlexNet):
  """conv2 as a full convolution: each tower's kernels applied to both towers' maps."""

  def __init__(self):
    super().__init__()
    self.conv2 = torch.nn.Conv2d(96, 256, 5, padding=2)

  def load_state_dict(self, state):
    state = dict(state)
    state["conv2.weight"] = torch.cat([state["conv2.weight"]] * 2, dim=1)
    return super().load_state_dict(state)


@pytest.mark.parametrize(
    "wrong", [_AlphaOverN, _WindowAcrossTowers, _Conv2ReadsBothTowers]
)
def test_a_wrong_convention_would_be_caught(
    paper_case, paper_jax_logits, wrong
):
  """The comparison above is sharp: PyTorch with alpha / n, with one LRN window across both towers,
  or with conv2 reading both towers gives logits far outside the tolerance."""
  _, _, images, net = paper_case
  other = wrong()
  other.load_state_dict(net.state_dict())
  off = _relative_difference(_torch_logits(other, images), paper_jax_logits)
  assert off > 100 * RELATIVE_TOLERANCE, off


# ----------------------------------------------------------------------------- torchvision's layout


def test_torchvision_layout_gives_pytorchs_logits():
  """torchvision's AlexNet with PyTorch's own initialisation, read by ``convert.from_torchvision``
  (the path of the pretrained ``.pth``)."""
  torch.manual_seed(0)
  net = torch_alexnet.alexnet()
  assert sum(p.numel() for p in net.parameters()) == 61_100_840
  images = (
      np.random.default_rng(1).normal(0, 1, (2, 224, 224, 3)).astype(np.float32)
  )
  model = convert.from_torchvision(net.state_dict())
  model.eval()
  got, want = np.asarray(model(images)), _torch_logits(net, images)
  assert _relative_difference(got, want) <= RELATIVE_TOLERANCE


def test_the_benchmarks_training_step_runs_for_both_networks():
  """Two SGD steps of each network, as ``torch_alexnet.py`` times them (channels_last): finite losses,
  and the weights move."""
  torch.manual_seed(0)
  for name in torch_alexnet.NETS:
    net = torch_alexnet.network(name, num_classes=10)
    net = net.to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.SGD(
        net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
    )
    images = torch.randn(2, 3, 224, 224).to(memory_format=torch.channels_last)
    labels = torch.tensor([1, 7])
    step = torch_alexnet.make_step(net, optimizer, images, labels, bf16=False)
    losses = [float(step().detach()) for _ in range(2)]
    assert np.all(np.isfinite(losses)), (name, losses)
    moved = [not torch.equal(a, b) for a, b in zip(before, net.parameters())]
    assert all(moved), name
