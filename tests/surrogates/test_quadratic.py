"""The quadratic surrogate: exact recovery, shrinking variance, links, few points."""

import pytest
import torch

from bambo.errors import ConfigError, NotFittedError
from bambo.surrogates import QuadraticSurrogate, build_surrogate, fit_surrogate, quadratic_features
from bambo.surrogates.bayes_linear import evidence_fit

D = torch.float64
A = torch.tensor([[2.0, 0.5, 0.0], [0.5, -1.0, 0.3], [0.0, 0.3, 1.5]], dtype=D)
B = torch.tensor([0.3, -0.2, 1.0], dtype=D)
E = 0.7


def true_quadratic(X):
    return 0.5 * ((X @ A) * X).sum(-1) + X @ B + E


def sobol(n, d=3, seed=0, low=-1.0, high=2.0):
    from torch.quasirandom import SobolEngine

    return low + (high - low) * SobolEngine(d, scramble=True, seed=seed).draw(n, dtype=D)


def test_features_follow_map_corollary_1_order():
    z = torch.tensor([[2.0, 3.0]], dtype=D)
    assert quadratic_features(z).tolist() == [[4.0, 9.0, 6.0, 2.0, 3.0, 1.0]]


def test_recovers_an_exact_quadratic_outside_the_unit_cube():
    X = sobol(40)
    model = QuadraticSurrogate(
        X, true_quadratic(X).unsqueeze(-1), bounds=torch.tensor([[-1.0] * 3, [2.0] * 3], dtype=D)
    ).fit()
    A_hat, b_hat, e_hat = model.coefficients()
    assert (A_hat - A).abs().max() < 1e-6 and (b_hat - B).abs().max() < 1e-6 and abs(e_hat - E) < 1e-6
    X_test = sobol(16, seed=1)
    torch.testing.assert_close(model.posterior(X_test).mean.squeeze(-1), true_quadratic(X_test), atol=1e-6, rtol=0)


def test_posterior_variance_shrinks_where_data_is_added():
    g = torch.Generator().manual_seed(0)
    X = sobol(12)
    Y = (true_quadratic(X) + 0.05 * torch.randn(12, generator=g, dtype=D)).unsqueeze(-1)
    point = torch.tensor([[1.5, 1.5, -0.5]], dtype=D)
    before = QuadraticSurrogate(X, Y).fit().posterior(point).variance.item()
    X_more = torch.cat([X, point + 0.05 * torch.randn(6, 3, generator=g, dtype=D)])
    Y_more = torch.cat([Y, (true_quadratic(X_more[12:]) + 0.05 * torch.randn(6, generator=g, dtype=D)).unsqueeze(-1)])
    model = QuadraticSurrogate(X_more, Y_more, bounds=QuadraticSurrogate(X, Y).bounds).fit()
    after = model.posterior(point).variance.item()
    assert after < 0.5 * before


def test_fewer_points_than_coefficients_is_handled_by_the_prior():
    X = sobol(4)  # 10 coefficients in 3-D
    model = QuadraticSurrogate(X, true_quadratic(X).unsqueeze(-1)).fit()
    post = model.posterior(sobol(8, seed=2))
    assert torch.isfinite(post.mean).all() and (post.variance > 0).all()


@pytest.mark.parametrize(
    ("spec", "lower", "upper"), [("quadratic-sigmoid", 0.2, 0.9), ("quadratic-softplus", 0.5, None)]
)
def test_links_keep_predictions_in_range(spec, lower, upper):
    X = sobol(25)
    raw = true_quadratic(X)
    if upper is None:
        Y = lower + torch.nn.functional.softplus(raw - 2.0)
        options = {"lower": lower}
    else:
        Y = lower + (upper - lower) * torch.sigmoid(raw - 2.0)
        options = {"lower": lower, "upper": upper}
    model = fit_surrogate(spec, X, Y.unsqueeze(-1), **options)
    far = sobol(64, seed=3, low=-6.0, high=8.0)  # far outside the data: extrapolation stresses the link
    post = model.posterior(far)
    samples = post.rsample(torch.Size([64]))
    for values in (post.mean, samples):
        assert (values >= lower).all()
        if upper is not None:
            assert (values <= upper).all()
    inside = sobol(16, seed=4)
    truth = lower + (
        torch.nn.functional.softplus(true_quadratic(inside) - 2.0)
        if upper is None
        else (upper - lower) * torch.sigmoid(true_quadratic(inside) - 2.0)
    )
    torch.testing.assert_close(model.posterior(inside).mean.squeeze(-1), truth, atol=2e-3, rtol=0)


def test_link_range_and_data_errors():
    X = sobol(10)
    with pytest.raises(ConfigError, match=r"outside the link's range \[0.0, 1.0\]"):
        fit_surrogate("quadratic-sigmoid", X, torch.full((10, 1), 1.5, dtype=D))
    with pytest.raises(ConfigError, match="non-finite"):
        fit_surrogate("quadratic", X, torch.full((10, 1), float("nan"), dtype=D))
    with pytest.raises(ConfigError, match=r"needs finite bounds with lower < upper, got \[0.5, 0.5\]"):
        fit_surrogate("quadratic-sigmoid", X, torch.full((10, 1), 0.5, dtype=D), lower=0.5, upper=0.5)
    with pytest.raises(ConfigError, match="10 points but train_Y has 9"):
        fit_surrogate("quadratic", X, torch.zeros(9, 1, dtype=D))


def test_few_points_do_not_make_the_posterior_of_f_certain():
    # 10 points for 45 coefficients in 8-D: the evidence alone would call everything noise
    from torch.quasirandom import SobolEngine

    X = SobolEngine(8, scramble=True, seed=0).draw(10, dtype=D)
    X_test = SobolEngine(8, scramble=True, seed=1).draw(200, dtype=D)
    f = lambda X: torch.exp(-((X - 0.4) ** 2).sum(-1))  # noqa: E731
    bounds = torch.stack([torch.zeros(8), torch.ones(8)]).double()
    post = QuadraticSurrogate(X, f(X).unsqueeze(-1), bounds=bounds).fit()
    latent = post.posterior(X_test)
    z = (f(X_test) - latent.mean.squeeze(-1)).abs() / latent.variance.squeeze(-1).sqrt()
    assert (z <= 1.645).double().mean() > 0.6


def test_input_width_noise_and_large_softplus_targets():
    X = sobol(20)
    model = QuadraticSurrogate(X, true_quadratic(X).unsqueeze(-1)).fit()
    with pytest.raises(ConfigError, match=r"X must have shape \(\.\.\., q, 3\), got \(4, 1\)"):
        model.posterior(torch.zeros(4, 1, dtype=D))
    point = sobol(1, seed=5)
    plain = model.posterior(point).variance.item()
    given = model.posterior(point, observation_noise=torch.full((1,), 0.5, dtype=D)).variance.item()
    assert given == pytest.approx(plain + 0.5)
    big = fit_surrogate("quadratic-softplus", X, (900.0 + true_quadratic(X)).unsqueeze(-1), lower=0.0)
    assert torch.isfinite(big.posterior(sobol(5, seed=6)).mean).all()


def test_scalarising_a_link_posterior_is_refused_clearly():
    from botorch.acquisition.objective import ScalarizedPosteriorTransform
    from botorch.exceptions.errors import UnsupportedError

    X = sobol(20, low=0.0, high=1.0)
    Y = torch.stack([torch.sigmoid(true_quadratic(X) - 2), torch.sigmoid(1 - true_quadratic(X))], -1)
    model = fit_surrogate("quadratic-sigmoid", X, Y)
    with pytest.raises(UnsupportedError, match="MC objective"):
        model.posterior(X[:2], posterior_transform=ScalarizedPosteriorTransform(torch.ones(2, dtype=D)))


def _random_quadratic(d, seed):
    g = torch.Generator().manual_seed(seed)
    A_ = torch.randn(d, d, generator=g, dtype=D)
    A_ = A_ + A_.T
    b_ = torch.randn(d, generator=g, dtype=D)
    e_ = float(torch.randn(1, generator=g, dtype=D))
    return g, lambda X: 0.5 * ((X @ A_) * X).sum(-1) + X @ b_ + e_


@pytest.mark.parametrize("extra", [0, 1])
@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_exact_quadratic_is_recovered_from_barely_enough_points(d, extra):
    # n = p (no residual degree of freedom) and n = p + 1 noise-free points determine the quadratic
    p = (d + 1) * (d + 2) // 2
    unit = torch.stack([torch.zeros(d), torch.ones(d)]).double()
    for seed in range(12):
        g, f = _random_quadratic(d, seed)
        X = torch.rand(p + extra, d, generator=g, dtype=D)
        X_test = torch.rand(200, d, generator=g, dtype=D)
        model = QuadraticSurrogate(X, f(X).unsqueeze(-1), bounds=unit).fit()
        truth = f(X_test)
        error = float((model.posterior(X_test).mean.squeeze(-1) - truth).abs().max())
        spread = float(truth.max() - truth.min())
        assert error < 1e-6 * spread, f"d={d}, n=p+{extra}, seed={seed}: error {error:.3g}, spread {spread:.3g}"


def test_evidence_fit_equals_least_squares_with_two_spare_points():
    # exact quadratic targets at n = p + 2: the evidence picks (near) zero noise and the fit is least squares
    for d in (2, 4):
        p = (d + 1) * (d + 2) // 2
        for seed in range(5):
            g = torch.Generator().manual_seed(seed)
            Phi = quadratic_features(torch.rand(p + 2, d, generator=g, dtype=D))
            y = Phi @ torch.randn(p, generator=g, dtype=D)
            y = (y - y.mean()) / y.std()
            w, _, noise, _ = evidence_fit(Phi, y)
            least_squares = torch.linalg.lstsq(Phi, y.unsqueeze(-1)).solution.squeeze(-1)
            assert (w - least_squares).abs().max() < 1e-8 * least_squares.abs().max() and noise < 1e-10


@pytest.mark.parametrize("steepness", [1.0, 8.0, 16.0])
def test_sigmoid_link_fits_exact_data_near_the_bounds(steepness):
    # sigmoid(steepness * quadratic): at steepness 8 targets come within 3e-5 of 1, at 16 within 1e-9
    X = sobol(12, d=2, low=0.0, high=1.0)
    X_test = sobol(64, d=2, seed=7, low=0.0, high=1.0)

    def f(X):
        return torch.sigmoid(steepness * (2.3 * X[:, 0] ** 2 - X[:, 0] * X[:, 1] + X[:, 1] - 0.8))

    assert steepness < 8.0 or float(1.0 - f(X).max()) < 1e-4  # closer to 1 than the inverse link's old clamp
    model = fit_surrogate("quadratic-sigmoid", X, f(X).unsqueeze(-1))
    for points in (X, X_test):
        error = float((model.posterior(points).mean.squeeze(-1) - f(points)).abs().max())
        assert error < 1e-6, f"steepness {steepness}: error {error:.3g}"


def test_a_noise_free_fit_gives_a_joint_posterior_over_many_points():
    """Interpolating fits (n = p) have ~0 noise; the rank-p covariance of 100 points must still factor."""
    from torch.quasirandom import SobolEngine

    from bambo.surrogates.registry import fit_surrogate

    def sphere(Z: torch.Tensor) -> torch.Tensor:  # PMTO's shifted sphere, d = 2 + 1 task parameter
        shift = (torch.sin(5 * (Z[:, 2:] + 0.5)) + 1) / 2
        return ((Z[:, :2] - shift) ** 2).sum(-1, keepdim=True)

    X = SobolEngine(3, scramble=True, seed=0).draw(10, dtype=torch.float64)  # p = 10 coefficients in d = 3
    X_test = SobolEngine(3, scramble=True, seed=1000).draw(100, dtype=torch.float64)
    model = fit_surrogate("quadratic", X, sphere(X))
    post = model.posterior(X_test, observation_noise=True)
    assert torch.isfinite(post.mean).all() and (post.variance > 0).all()
    torch.testing.assert_close(model.posterior(X).mean, sphere(X), atol=1e-6, rtol=0)  # it interpolates


def test_building_does_not_fit():
    X = sobol(20)
    Y = true_quadratic(X).unsqueeze(-1)
    built = build_surrogate("quadratic", X, Y)
    assert isinstance(built, QuadraticSurrogate) and not built.fitted and built.num_outputs == 1
    with pytest.raises(NotFittedError, match="not fitted; call fit"):
        built.coefficients()
    with pytest.raises(NotFittedError):
        built.posterior(X[:2])
    assert built.fit() is built and built.fitted
    fitted = fit_surrogate("quadratic", X, Y)
    for name in ("weight_mean", "weight_cov", "noise", "y_mean", "y_std"):  # building then fitting is fit_surrogate
        assert torch.equal(getattr(built, name), getattr(fitted, name))
    with pytest.raises(ConfigError, match="outside the link's range"):  # the data are checked when building
        build_surrogate("quadratic-sigmoid", X, torch.full((20, 1), 1.5, dtype=D))
