"""How far PyTorch's and JAX's Gamma reparameterisation gradients are from the truth (optional peers).

For each shape ``a`` of a grid from 1e-3 to 1e4, each library draws
``ACCURACY_DRAWS`` unit-rate Gamma(a) variates in float64 with its own
sampler and gives the per-draw gradient ``dx/da`` its autodiff computes
(PyTorch: ``Gamma(a, 1).rsample()`` and ``backward``; JAX: ``jax.grad``
through ``jax.random.gamma``). fastgrad's ``fastgrad.math.gamma_sample_grad``
(within 1e-13 of mpmath, ``docs/math.md``) evaluated on the *same draws* is
the reference: the table gives the median and the largest relative error per
library and shape (draws of 0, below the smallest double, are left out).
Then the throughput of draws with their gradients (``THROUGHPUT_DRAWS``) for
each library, and the pathwise estimate of ``d E[x**2] / d shape`` against
PyTorch's ``rsample`` and autograd, in the same run.

The Dirichlet: PyTorch's ``Dirichlet.rsample`` differentiates each
component through its Beta marginal's CDF, so its per-draw
``dx_k/dalpha_k`` is compared with :func:`fastgrad.dirichlet.beta_sample_grad`
on the same draws (``Dirichlet([alpha, 1, 2])``, the first component, a
Beta(alpha, 3) marginal; ``DIRICHLET_DRAWS`` per alpha). JAX's Dirichlet
normalises Gamma draws it does not return, and its gradient goes through
them: there is no per-draw value of the same quantity to compare.

Skipped where a library is not installed (neither is a fastgrad dependency).
"""

import time

import numba
import numpy as np
import pytest

import fastgrad as fg
import fastgrad.math as fm
from fastgrad import rng

SHAPES = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
ACCURACY_DRAWS = 100_000
THROUGHPUT_DRAWS = 10**7
THROUGHPUT_SHAPES = (1.0, 100.0)
PATHWISE_SHAPE = 2.5

DIRICHLET_DRAWS = 20_000
#: The Dirichlet's other concentrations: the first component is a Beta(alpha, sum(DIRICHLET_REST)) draw.
DIRICHLET_REST = (1.0, 2.0)

#: (library, shape) -> (median, max relative error, draws compared): the summary's table
ERRORS = {}


@numba.njit(parallel=True, cache=True)
def _exact(x, alpha, out):
    for i in numba.prange(x.size):
        out[i] = fm.gamma_sample_grad(x[i], alpha)


def _record_errors(library, alpha, x, grads, exact=None):
    if exact is None:
        exact = np.empty_like(x)
        _exact(x, alpha, exact)
    keep = (x > 0.0) & (exact != 0.0) & np.isfinite(exact)  # (a Dirichlet component of 1 has dx/dalpha 0: left out)
    relative = np.abs(grads[keep] / exact[keep] - 1.0)
    ERRORS[(library, alpha)] = (float(np.median(relative)), float(np.max(relative)), int(keep.sum()))


def _torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch


def _jax():
    pytest.importorskip("jax")
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def _torch_draws(torch, alpha, n):
    a = torch.full((n,), alpha, dtype=torch.float64, requires_grad=True)
    x = torch.distributions.Gamma(a, torch.ones((), dtype=torch.float64)).rsample()
    x.sum().backward()
    return x.detach().numpy(), a.grad.numpy()


def _jax_sampler(jax):
    import jax.numpy as jnp

    def draws(key, a):
        return jax.random.gamma(key, a, dtype=jnp.float64)

    gradient = jax.jit(jax.grad(lambda a, key: draws(key, a).sum()))
    return jax.jit(draws), gradient


@pytest.mark.parametrize("alpha", SHAPES)
def test_torch_gradient_accuracy(alpha):
    torch = _torch()
    x, grads = _torch_draws(torch, alpha, ACCURACY_DRAWS)
    _record_errors("PyTorch", alpha, x, grads)


@pytest.mark.parametrize("alpha", SHAPES)
def test_torch_dirichlet_gradient_accuracy(alpha):
    from fastgrad.dirichlet import beta_sample_grad

    torch = _torch()
    row = torch.tensor([alpha, *DIRICHLET_REST], dtype=torch.float64)
    concentration = row.repeat(DIRICHLET_DRAWS, 1).requires_grad_()  # a row per draw: per-draw gradients
    x = torch.distributions.Dirichlet(concentration).rsample()
    x[:, 0].sum().backward()
    first = x[:, 0].detach().numpy()
    exact = beta_sample_grad(first, alpha, sum(DIRICHLET_REST))
    # Left out: components PyTorch clamped to the smallest normal double (half of them at alpha = 1e-3), and any
    # below 1e-290, where x S is subnormal and the reference's Gamma gradient is accurate in absolute terms only.
    exact[first < 1e-290] = np.nan
    _record_errors("PyTorch Dirichlet", alpha, first, concentration.grad[:, 0].numpy(), exact)


@pytest.mark.parametrize("alpha", SHAPES)
def test_jax_gradient_accuracy(alpha):
    jax = _jax()
    import jax.numpy as jnp

    sample, gradient = _jax_sampler(jax)
    a = jnp.full((ACCURACY_DRAWS,), alpha, dtype=jnp.float64)
    key = jax.random.PRNGKey(0)
    x, grads = np.asarray(sample(key, a)), np.asarray(gradient(a, key))
    _record_errors("JAX", alpha, x, grads)


@pytest.mark.benchmark(group="reference gradients")
@pytest.mark.parametrize("alpha", THROUGHPUT_SHAPES)
def test_fastgrad_draws_with_gradients(benchmark, record, alpha):
    x, out = np.empty(THROUGHPUT_DRAWS), np.empty(THROUGHPUT_DRAWS)

    def run():
        rng.fill_gammas(rng.stream_state(0, 0), alpha, x)
        _exact(x, alpha, out)

    run()
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    record(f"fastgrad draws + dx/da, alpha={alpha:g}", THROUGHPUT_DRAWS, threads=numba.get_num_threads())


@pytest.mark.benchmark(group="reference gradients")
@pytest.mark.parametrize("alpha", THROUGHPUT_SHAPES)
def test_torch_draws_with_gradients(benchmark, record, alpha):
    torch = _torch()
    _torch_draws(torch, alpha, 10_000)
    benchmark.pedantic(_torch_draws, args=(torch, alpha, THROUGHPUT_DRAWS), rounds=3, warmup_rounds=0)
    record(f"PyTorch draws + dx/da, alpha={alpha:g}", THROUGHPUT_DRAWS, threads=torch.get_num_threads())


@pytest.mark.benchmark(group="reference gradients")
@pytest.mark.parametrize("alpha", THROUGHPUT_SHAPES)
def test_jax_draws_with_gradients(benchmark, record, alpha):
    jax = _jax()
    import jax.numpy as jnp

    sample, gradient = _jax_sampler(jax)
    a = jnp.full((THROUGHPUT_DRAWS,), alpha, dtype=jnp.float64)
    key = jax.random.PRNGKey(0)

    def run():
        sample(key, a).block_until_ready()
        gradient(a, key).block_until_ready()

    # One round: JAX takes about 14 us a draw here (2 minutes for 10**7), and its compile for this size, inside
    # the round, is about 1 % of it.
    benchmark.pedantic(run, rounds=1, warmup_rounds=0)
    record(f"JAX draws + dx/da, alpha={alpha:g}", THROUGHPUT_DRAWS)


@pytest.mark.benchmark(group="gamma pathwise")
def test_fastgrad_gamma_pathwise(benchmark, record):
    d = fg.Gamma(PATHWISE_SHAPE, 1.0)

    def run():
        return fg.estimate(d, "square", n=THROUGHPUT_DRAWS, seed=0, estimator="pathwise", wrt=["shape"], threads=2)

    run()
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    record("fastgrad estimate pathwise (shape), 2 threads", THROUGHPUT_DRAWS, threads=2)


@pytest.mark.benchmark(group="gamma pathwise")
def test_torch_gamma_pathwise(benchmark, record):
    torch = _torch()
    torch.set_num_threads(2)

    def run():
        a = torch.tensor(PATHWISE_SHAPE, dtype=torch.float64, requires_grad=True)
        x = torch.distributions.Gamma(a, torch.ones((), dtype=torch.float64)).rsample((THROUGHPUT_DRAWS,))
        (x * x).mean().backward()
        return float(a.grad)

    started = time.perf_counter()
    run()
    assert time.perf_counter() - started > 0
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    record("PyTorch rsample + autograd (shape), 2 threads", THROUGHPUT_DRAWS, threads=2)


DIRICHLET_PATHWISE = (1.5, 2.0, 3.0)


@pytest.mark.benchmark(group="dirichlet pathwise")
def test_fastgrad_dirichlet_pathwise(benchmark, record):
    d = fg.Dirichlet(DIRICHLET_PATHWISE)

    def run():
        return fg.estimate(d, fg.functions.sum_of_squares(), n=THROUGHPUT_DRAWS, seed=0, estimator="pathwise",
                           threads=2)  # fmt: skip

    run()
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    record("fastgrad estimate pathwise (Dirichlet, K = 3), 2 threads", THROUGHPUT_DRAWS, threads=2)


@pytest.mark.benchmark(group="dirichlet pathwise")
def test_torch_dirichlet_pathwise(benchmark, record):
    torch = _torch()
    torch.set_num_threads(2)

    def run():
        a = torch.tensor(DIRICHLET_PATHWISE, dtype=torch.float64, requires_grad=True)
        x = torch.distributions.Dirichlet(a).rsample((THROUGHPUT_DRAWS,))
        (x * x).sum(-1).mean().backward()
        return a.grad.numpy().copy()

    run()
    benchmark.pedantic(run, rounds=3, warmup_rounds=0)
    record("PyTorch rsample + autograd (Dirichlet, K = 3), 2 threads", THROUGHPUT_DRAWS, threads=2)


def test_print_the_error_table(capsys):
    """Not a check: prints the accuracy table gathered above (run last in this file)."""
    if not ERRORS:
        pytest.skip("neither PyTorch nor JAX is installed")
    with capsys.disabled():
        print("\n| library | alpha | median relative error | largest | draws compared |")
        print("|---|---|---|---|---|")
        for (library, alpha), (median, largest, count) in sorted(ERRORS.items()):
            print(f"| {library} | {alpha:g} | {median:.2e} | {largest:.2e} | {count:,} |")
