"""Optional peers: PyTorch and JAX doing the seed computation in float64 (skipped when not installed).

Each draws ``n`` standard normals and computes the score-function and
pathwise per-draw values of the seed problem (Normal(2, 1), f = x**2,
gradient wrt loc), then their variances: in closed form, and through the
library's own automatic differentiation (``vmap(grad(...))``).
"""

import pytest

THETA = 2.0
N = 10**7


def _square(x):
    return x * x


def _log_normal_density(theta, x):
    return -0.5 * (x - theta) ** 2


@pytest.mark.benchmark(group="seed comparison")
def test_torch_closed_form(benchmark, record):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)

    def run(n):
        eps = torch.randn(n, dtype=torch.float64, generator=generator)
        x = THETA + eps
        return float((x * x * eps).var() / (2.0 * x).var())

    run(10_000)
    ratio = benchmark.pedantic(run, args=(N,), rounds=7, warmup_rounds=1)
    assert abs(ratio - 21.75) < 0.5
    record("PyTorch, closed-form tensors", N, variance_ratio=ratio, threads=torch.get_num_threads())


@pytest.mark.benchmark(group="seed comparison")
def test_torch_vmap_grad(benchmark, record):
    torch = pytest.importorskip("torch")
    from torch.func import grad, vmap

    generator = torch.Generator().manual_seed(0)
    theta = torch.tensor(THETA, dtype=torch.float64)
    score_factor = vmap(grad(_log_normal_density), in_dims=(None, 0))  # d log q / d theta per draw
    pathwise = vmap(grad(lambda t, e: _square(t + e)), in_dims=(None, 0))  # d f(theta + eps) / d theta

    def run(n):
        eps = torch.randn(n, dtype=torch.float64, generator=generator)
        x = theta + eps
        score = _square(x) * score_factor(theta, x)
        return float(score.var() / pathwise(theta, eps).var())

    run(10_000)
    ratio = benchmark.pedantic(run, args=(N,), rounds=7, warmup_rounds=1)
    assert abs(ratio - 21.75) < 0.5
    record("PyTorch, vmap(grad)", N, variance_ratio=ratio, threads=torch.get_num_threads())


@pytest.mark.benchmark(group="seed comparison")
def test_jax_jit_vmap_grad(benchmark, record):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    score_factor = jax.vmap(jax.grad(_log_normal_density), in_axes=(None, 0))
    pathwise = jax.vmap(jax.grad(lambda t, e: _square(t + e)), in_axes=(None, 0))

    @jax.jit
    def ratio_of(key, theta):
        eps = jax.random.normal(key, (N,), dtype=jnp.float64)
        x = theta + eps
        score = _square(x) * score_factor(theta, x)
        return score.var() / pathwise(theta, eps).var()

    keys = iter(jax.random.split(jax.random.PRNGKey(0), 100))
    theta = jnp.float64(THETA)
    float(ratio_of(next(keys), theta))  # compile outside the timing

    def run():
        return float(ratio_of(next(keys), theta))

    ratio = benchmark.pedantic(run, rounds=7, warmup_rounds=1)
    assert abs(ratio - 21.75) < 0.5
    record("JAX, jit(vmap(grad))", N, variance_ratio=ratio, threads=None)
