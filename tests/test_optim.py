"""The optimiser against the paper's update rule (§5) computed by hand, and the plateau schedule."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax.training import optim


def paper_rule_by_hand(w, grads, rates, momentum=0.9, decay=5e-4):
  """v <- 0.9 v - 0.0005 eps w - eps g;  w <- w + v, one (g, eps) pair per step."""
  v = np.zeros_like(w)
  for g, eps in zip(grads, rates):
    v = momentum * v - decay * eps * w - eps * g
    w = w + v
  return w


def run(tx, w, grads, rates):
  params = {"kernel": jnp.asarray(w)}
  state = tx.init(params)
  for g, eps in zip(grads, rates):
    state = optim.with_learning_rate(state, eps)
    updates, state = tx.update({"kernel": jnp.asarray(g)}, state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params["kernel"])


def test_updates_follow_the_paper_equation_across_a_rate_reduction():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(3, 4))
  grads = [rng.normal(size=(3, 4)) for _ in range(6)]
  # divided by 10 after three steps
  rates = [0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
  got = run(optim.paper_sgd(0.01), w, grads, rates)
  np.testing.assert_allclose(
      got, paper_rule_by_hand(w, grads, rates), rtol=1e-6
  )
  # optax.sgd applies the new rate to the whole momentum trace: a different trajectory after the cut.
  trace_scaled = optax.inject_hyperparams(
      lambda learning_rate: optax.chain(
          optax.add_decayed_weights(5e-4),
          optax.sgd(learning_rate, momentum=0.9),
      )
  )
  other = run(trace_scaled(learning_rate=0.01), w, grads, rates)
  assert not np.allclose(other, got, rtol=1e-4)


def test_first_step_by_hand():
  # One step from v = 0: w' = w - eps * (g + 0.0005 w) = 2 - 0.01 * (1 + 0.001) = 1.98999.
  got = run(optim.paper_sgd(0.01), np.array([2.0]), [np.array([1.0])], [0.01])
  np.testing.assert_allclose(got, [1.98999], rtol=1e-6)


def test_biases_are_not_decayed():
  tx = optim.paper_sgd(0.1, weight_decay=0.5)
  params = {"conv1": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
  zero = {"conv1": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["conv1"]["kernel"], -0.1 * 0.5)
  np.testing.assert_allclose(updates["conv1"]["bias"], 0.0)


def test_plateau_reduces_only_when_the_error_stalls_and_at_most_three_times():
  schedule = optim.PlateauSchedule(
      0.01, factor=0.1, patience=2, max_reductions=3
  )
  errors = [
      0.9,
      0.8,
      0.7,  # improving: no change
      0.7,
      0.75,  # two evals without improvement -> 0.001
      0.6,  # improvement resets the count
      0.65,
      0.6,  # stalls twice (equal is no improvement) -> 0.0001
      0.6,
      0.6,  # -> 0.00001 (third and last reduction)
      0.6,
      0.6,
      0.6,
      0.6,
  ]  # stalls on, but no fourth reduction
  rates = [schedule.update(e) for e in errors]
  expected = [0.01] * 4 + [1e-3] * 3 + [1e-4] * 2 + [1e-5] * 5
  np.testing.assert_allclose(rates, expected, rtol=1e-9)
  assert schedule.reductions == 3


def test_plateau_state_round_trips():
  a = optim.PlateauSchedule(0.01, patience=1)
  for e in (0.5, 0.6):
    a.update(e)
  b = optim.PlateauSchedule(0.01, patience=1)
  b.load_state_dict(a.state_dict())
  assert b == a and b.learning_rate == pytest.approx(0.001)
