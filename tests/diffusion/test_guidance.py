"""Classifier-free guidance, class labels and the class-conditional U-Net."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from jax.scipy.stats import norm

from ddpm.diffusion import guidance, parameterization, schedules
from ddpm.pipelines import denoiser
from ddpm.training import train_step
from ddpm.models.unet import UNet

S = schedules.make_schedule("linear", 1000)


@given(st.integers(0, 2**31 - 1), st.floats(-1.0, 8.0))
def test_guided_output_is_the_affine_combination_of_eq_6(seed, w):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  c, u = jax.random.normal(k1, (3, 5)), jax.random.normal(k2, (3, 5))
  out = guidance.guided_output(c, u, w)
  np.testing.assert_allclose(out, (1 + w) * c - w * u, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(guidance.guided_output(c, u, 0.0), c)
  np.testing.assert_allclose(guidance.guided_output(c, u, -1.0), u, atol=1e-6)


@given(st.integers(0, 999), st.integers(0, 2**31 - 1), st.floats(-1.0, 6.0),
       st.sampled_from(["x0", "v"]))
def test_guiding_any_parameterization_equals_guiding_eps(t, seed, w, kind):
  """eps is affine in the x0 or v output given x_t, so guidance commutes with the conversion."""
  ks = jax.random.split(jax.random.PRNGKey(seed), 3)
  xt, out_c, out_u = (jax.random.normal(k, (2, 4, 4, 1)) for k in ks)
  tb = jnp.full((2,), t)
  eps = lambda out: parameterization.model_output_to_x0_eps(S, kind, out, xt, tb, clip_x0=False)[1]
  guided_then_eps = eps(guidance.guided_output(out_c, out_u, w))
  eps_then_guided = guidance.guided_output(eps(out_c), eps(out_u), w)
  scale = 1.0 + float(jnp.max(jnp.abs(eps_then_guided)))
  np.testing.assert_allclose(guided_then_eps, eps_then_guided, atol=2e-5 * scale * (1 + abs(w)))


@given(st.integers(1, 999), st.floats(-3, 3), st.floats(-1.0, 5.0), st.integers(0, 2))
def test_guided_exact_eps_is_the_eps_of_the_tilted_density(t, x, w, c):
  """For 1-d data from a mixture of 3 Gaussian classes, the exact eps(x_t, c) and eps(x_t)
  guided with weight w equal -sigma_t times the score of p(x_t) p(c | x_t)^(1 + w), with
  p(c | x_t) from Bayes' rule: the meaning of eq. 6 of Ho & Salimans (2022)."""
  pi = jnp.array([0.2, 0.5, 0.3])
  mu, s = jnp.array([-1.0, 0.2, 0.8]), jnp.array([0.3, 0.1, 0.2])
  a, sig = S.sqrt_alpha_bars[t], S.sqrt_one_minus_alpha_bars[t]
  std = jnp.sqrt(a**2 * s**2 + sig**2)  # x_t | c ~ N(a mu_c, a^2 s_c^2 + sigma_t^2).
  log_pc = lambda xt: norm.logpdf(xt, a * mu, std)  # [3]: log p(x_t | c) per class.
  log_p = lambda xt: jax.scipy.special.logsumexp(jnp.log(pi) + log_pc(xt))
  log_post = lambda xt: jnp.log(pi[c]) + log_pc(xt)[c] - log_p(xt)  # Bayes' rule.
  eps_c = -sig * jax.grad(lambda xt: log_pc(xt)[c])(x)
  eps_u = -sig * jax.grad(log_p)(x)
  tilted = -sig * (jax.grad(log_p)(x) + (1 + w) * jax.grad(log_post)(x))
  np.testing.assert_allclose(guidance.guided_output(eps_c, eps_u, w), tilted,
                             rtol=1e-4, atol=1e-4 * (1 + abs(float(tilted))))


def test_guided_denoise_fn_is_one_batched_call_equal_to_two_separate_ones():
  calls = []

  def net(x, t, y):
    calls.append(x.shape[0])
    return x * (1.0 + y[:, None]) + t[:, None] * 0.01

  x, t = jnp.arange(6.0).reshape(3, 2), jnp.array([5, 7, 9])
  y, null = jnp.array([0, 2, 1]), 3
  for w in (-1.0, 0.0, 0.5, 3.0):
    calls.clear()
    out = guidance.guided_denoise_fn(net, y, null, w)(x, t)
    calls_made = list(calls)
    want = (1 + w) * net(x, t, y) - w * net(x, t, jnp.full((3,), null))
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert calls_made == ([3] if w in (-1.0, 0.0) else [6])  # One network call.


def test_autoguided_denoise_fn_extrapolates_from_the_guide_and_skips_it_at_w_0():
  calls = []

  def net(tag, scale):
    def fn(x, t):
      calls.append(tag)
      return scale * x + 0.01 * t[:, None]
    return fn

  x, t = jnp.arange(6.0).reshape(3, 2), jnp.array([5, 7, 9])
  main, guide = net("main", 1.5), net("guide", 0.5)
  for w in (0.0, 0.5, 2.0):
    calls.clear()
    out = guidance.autoguided_denoise_fn(main, guide, w)(x, t)
    made = list(calls)
    np.testing.assert_allclose(out, (1 + w) * main(x, t) - w * guide(x, t), rtol=1e-6)
    assert made == (["main"] if w == 0.0 else ["main", "guide"])


@given(st.integers(1, 999), st.floats(-3, 3), st.floats(0.0, 4.0), st.floats(0.1, 1.0),
       st.floats(0.1, 1.0), st.sampled_from(["eps", "x0", "v"]))
def test_autoguided_exact_denoisers_give_the_denoiser_of_the_tilted_density(t, x, w, s1, s0,
                                                                            kind):
  """Karras et al. (2024), Sec. 3: for a model exact for data N(0, s1^2) guided by one exact for
  N(0, s0^2), the guided x0 (from the raw outputs of any parameterization, combined as
  `autoguided_denoise_fn` does) is Tweedie's x0 of the density p1(x_t)^(1 + w) p0(x_t)^(-w):
  x0 = (x_t + sigma_t^2 grad log of it) / alpha_t."""
  a, sig = S.sqrt_alpha_bars[t], S.sqrt_one_minus_alpha_bars[t]
  log_p = lambda xt, s: norm.logpdf(xt, 0.0, jnp.sqrt(a**2 * s**2 + sig**2))
  tweedie = lambda score: (x + sig**2 * score) / a
  xt, tb = jnp.full((1, 1), x), jnp.full((1,), t)

  def output(s):  # The exact model's raw output for N(0, s^2) data, in `kind`.
    x0 = tweedie(jax.grad(log_p)(x, s)) * jnp.ones((1, 1))
    eps = parameterization.eps_from_x0(S, xt, tb, x0)
    return {"eps": eps, "x0": x0, "v": parameterization.v_from_x0_eps(S, x0, tb, eps)}[kind]

  guided = guidance.autoguided_denoise_fn(lambda *_: output(s1), lambda *_: output(s0), w)(xt, tb)
  x0, _ = parameterization.model_output_to_x0_eps(S, kind, guided, xt, tb)
  tilted = jax.grad(lambda y: (1 + w) * log_p(y, s1) - w * log_p(y, s0))(x)
  want = tweedie(tilted)
  np.testing.assert_allclose(x0[0, 0], want, rtol=2e-4, atol=2e-4 * (1 + abs(float(want))))


@given(st.integers(1, 500), st.integers(1, 12))
def test_balanced_labels_are_contiguous_blocks_of_near_equal_size(num, k):
  y = guidance.class_labels(num, k)
  assert y.shape == (num,) and y.dtype == np.int32
  assert np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() < k
  counts = np.bincount(y, minlength=k)
  if num >= k:
    assert counts.max() - counts.min() <= 1
  if num % k == 0:
    np.testing.assert_array_equal(y.reshape(k, -1), np.arange(k)[:, None] * np.ones(num // k))


@pytest.mark.parametrize("label,k,match", [(10, 10, "out of range.*0..9"), (-2, 10, "out of range"),
                                            (3, 0, "unconditional"), (1.5, 10, "integer")])
def test_bad_class_labels_are_one_line_errors(label, k, match):
  with pytest.raises(ValueError, match=match) as e:
    guidance.check_class_label(label, k)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
def test_label_dropout_rate_and_independence_from_the_batch_split(p):
  key, n = jax.random.PRNGKey(3), 20000
  labels = jnp.arange(n) % 10
  ids = jnp.arange(n)
  dropped = train_step.drop_labels(key, labels, ids, p, 10)
  frac = float(jnp.mean(dropped == 10))
  assert abs(frac - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9  # Binomial, 4 sigma.
  kept = dropped != 10
  np.testing.assert_array_equal(dropped[kept], labels[kept])
  # Example i's decision depends on (key, i) alone: any slice of the ids agrees.
  part = train_step.drop_labels(key, labels[777:1777], ids[777:1777], p, 10)
  np.testing.assert_array_equal(part, dropped[777:1777])


@pytest.fixture(scope="module")
def conditional_unet():
  model = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
               num_groups=4, num_classes=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  t, y = jnp.array([1, 50, 300, 900]), jnp.array([0, 1, 2, 3])
  params = model.init(jax.random.PRNGKey(1), x, t, y)["params"]
  # Move every parameter off its initialization (zero-initialized output convs included).
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
  return model, params, x, t


def test_conditional_unet_depends_on_the_label_and_has_a_null_row(conditional_unet):
  model, params, x, t = conditional_unet
  assert params["class_embedding"]["embedding"].shape == (4, 32)  # 3 classes + null, 4 ch.
  outs = [model.apply({"params": params}, x, t, jnp.full((4,), c)) for c in range(4)]
  for i in range(4):
    for j in range(i):
      assert float(jnp.max(jnp.abs(outs[i] - outs[j]))) > 1e-3
  uncond = denoiser.make_denoise_fn(model, params)(x, t)  # No labels: the null label.
  np.testing.assert_allclose(uncond, outs[3], rtol=1e-6, atol=1e-6)
  w = 2.0
  y = jnp.array([0, 1, 2, 0])
  guided = denoiser.make_denoise_fn(model, params, y, w)(x, t)
  cond = model.apply({"params": params}, x, t, y)
  np.testing.assert_allclose(guided, (1 + w) * cond - w * outs[3], rtol=1e-4, atol=1e-5)


def test_autoguidance_by_a_guide_equal_to_the_model_changes_nothing_and_else_extrapolates(
    conditional_unet):
  model, params, x, t = conditional_unet
  y = jnp.array([0, 1, 2, 0])
  plain = denoiser.make_denoise_fn(model, params, y, 1.0)(x, t)
  same = denoiser.make_denoise_fn(model, params, y, 1.0, params, 2.0)(x, t)
  np.testing.assert_allclose(same, plain, rtol=1e-5, atol=1e-5)
  weaker = jax.tree_util.tree_map(lambda p: 0.9 * p, params)
  guide = denoiser.make_denoise_fn(model, weaker, y, 1.0)(x, t)
  guided = denoiser.make_denoise_fn(model, params, y, 1.0, weaker, 2.0)(x, t)
  np.testing.assert_allclose(guided, 3.0 * plain - 2.0 * guide, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="needs the guide's parameters"):
    denoiser.make_denoise_fn(model, params, y, 1.0, None, 2.0)


def test_labels_and_guidance_on_an_unconditional_model_are_errors(conditional_unet):
  model, params, x, t = conditional_unet
  with pytest.raises(ValueError, match="needs labels"):
    model.apply({"params": params}, x, t)
  uncond = UNet(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0,
                num_groups=4)
  p = uncond.init(jax.random.PRNGKey(0), x, t)["params"]
  with pytest.raises(ValueError, match="unconditional U-Net"):
    uncond.apply({"params": p}, x, t, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="guidance_weight=2.0 needs a class-conditional model"):
    denoiser.make_denoise_fn(uncond, p, None, 2.0)


@given(st.integers(0, 2**31 - 1), st.floats(0.1, 3.0), st.integers(0, 999), st.integers(0, 999))
def test_autoguidance_in_a_time_step_interval_guides_inside_and_skips_the_guide_outside(
    seed, w, a, b):
  lo, hi = sorted((a, b))
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.normal(k1, (6, 2, 2, 1))
  t = jax.random.randint(k2, (6,), 0, 1000)
  guide_calls = []

  def guide(x, t):
    jax.debug.callback(lambda: guide_calls.append(1))
    return 0.5 * x - 0.001 * t[:, None, None, None]

  main = lambda x, t: 1.5 * x + 0.002 * t[:, None, None, None]
  out = guidance.autoguided_denoise_fn(main, guide, w, (lo, hi))(x, t)
  jax.effects_barrier()
  inside = ((t >= lo) & (t <= hi))[:, None, None, None]
  # The guide runs only when some example is inside (one lax.cond branch per call).
  assert len(guide_calls) == int(bool(jnp.any(inside)))
  want = jnp.where(inside, (1 + w) * main(x, t) - w * guide(x, t), main(x, t))
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  everywhere = guidance.autoguided_denoise_fn(main, guide, w, (0, 999))(x, t)
  np.testing.assert_allclose(everywhere, (1 + w) * main(x, t) - w * guide(x, t), rtol=1e-5,
                             atol=1e-5)
