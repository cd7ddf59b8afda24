"""Image event shapes inside Pyro: the digits as ``(1, 8, 8)`` images observed, fitted,
predicted and reparameterized, and image input that does not fit refused."""

import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO

import pyro_xform as px
from pyro_xform.infer import BaseReparam
from pyro_xform.nn import MLP, ConvDecoder, ConvEncoder, PixelCNN, TimeMLP, TimeUNet
from pyro_xform.transforms import Logit, MultiscaleFlow, RQSpline

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def images():
    return px.datasets.digits(image=True).train[:32].to(torch.get_default_dtype())


def test_an_image_flow_is_the_flat_flow_with_its_values_reshaped(images):
    torch.manual_seed(0)
    image = px.NSF(SHAPE, transforms=2, hidden=(16,), architecture="mlp")
    flat = px.NSF(64, transforms=2, hidden=(16,))
    flat.load_state_dict(image.state_dict())
    lp = image().log_prob(images)
    assert image().event_shape == SHAPE and lp.shape == (32,)
    torch.testing.assert_close(lp, flat().log_prob(images.reshape(32, 64)))
    torch.manual_seed(1)
    drawn = image().sample((3,))
    torch.manual_seed(1)
    assert torch.equal(drawn, flat().sample((3,)).reshape(3, *SHAPE))


def test_images_are_observed_in_a_plate_under_svi_and_predictive(images):
    flow = px.MAF(SHAPE, transforms=2, hidden=(16,))

    def model(x=None):
        pyro.module("flow", flow)
        with pyro.plate("data", 32):
            return pyro.sample("x", flow(), obs=x)

    before = [p.detach().clone() for p in flow.parameters()]
    svi = SVI(model, lambda x=None: None, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(images) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True))
    draws = Predictive(model, num_samples=2)()["x"]
    assert draws.shape == (2, 32, *SHAPE)


@pytest.mark.parametrize(
    "build",
    [
        lambda: px.VAE(SHAPE, latent=4, hidden=(32,), likelihood="continuous_bernoulli"),
        lambda: px.FlowMatching(SHAPE, hidden=(32,)),
        lambda: px.GAN(SHAPE, latent=4, hidden=(32,)),
        lambda: px.Diffusion(SHAPE, hidden=(32,)),
    ],
    ids=["VAE", "FlowMatching", "GAN", "Diffusion"],
)
def test_every_kind_of_family_fits_and_draws_images(build, images):
    model = build()
    result = px.fit(model, images, steps=3, batch_size=16, progress=False, seed=0)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert model().sample((5,)).shape == (5, *SHAPE)
    if isinstance(model, px.Diffusion):  # the fixed-step samplers draw images too
        assert model.sample((5,), sampler="dpm", steps=4).shape == (5, *SHAPE)


@pytest.mark.parametrize("family", [px.NSF, px.Diffusion, px.DiscreteAutoregressive])
def test_image_batches_that_do_not_fit_are_refused_before_any_change(family, images):
    model = family(SHAPE, hidden=(16,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    binary = (images > 0.5).to(images.dtype)
    for bad, message in [
        (binary[:, 0], r"shape \(32, 8, 8\); expected \(N, 1, 8, 8\)"),  # no channel axis
        (binary.permute(0, 2, 3, 1), r"expected \(N, 1, 8, 8\)"),  # channels last
        ((binary * 255).to(torch.uint8), "floating-point"),  # raw pixels
        (binary[:0], "empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            px.fit(model, bad, steps=1, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pyro.validation_enabled(True), pytest.raises(ValueError):
        model().log_prob(binary[:, 0])


def test_a_shape_is_checked_when_the_model_is_built():
    assert px.MAF([1, 8, 8], hidden=(4,)).event_shape == SHAPE  # as a JSON config holds it
    for bad in [(1, 0, 8), (), (1.0, 8, 8), (True, 8), "1x8x8"]:
        with pytest.raises(ValueError, match="features must be a positive int or a shape"):
            px.MAF(bad, hidden=(4,))


@pytest.mark.parametrize(
    "build",
    [lambda: px.GAN(SHAPE, latent=3, hidden=(16,)), lambda: px.RealNVP(SHAPE, transforms=2, hidden=(16,))],
    ids=["GAN", "RealNVP"],
)
def test_an_image_prior_reparameterized_into_its_base(build, images):
    prior = build().requires_grad_(False)

    def inverse_problem(y):  # observe every other pixel of an image with noise
        x = pyro.sample("x", prior())
        pyro.sample("y", pyro.distributions.Normal(x[..., ::2], 0.1).to_event(3), obs=y)

    reparam = pyro.poutine.reparam(inverse_problem, config={"x": BaseReparam()})
    trace = pyro.poutine.trace(reparam).get_trace(images[0, ..., ::2])
    base = trace.nodes["x_base"]["value"]
    assert trace.nodes["x"]["value"].shape == SHAPE
    assert base.shape == (prior.latent if isinstance(prior, px.GAN) else 64,)
    assert torch.isfinite(trace.log_prob_sum())


def test_an_image_model_picks_a_unet_and_a_small_or_flat_one_an_mlp():
    assert isinstance(px.FlowMatching(SHAPE).network, TimeUNet)
    assert isinstance(px.Diffusion(SHAPE, channels=8, attention=True).network, TimeUNet)
    assert isinstance(px.FlowMatching((1, 2, 3)).network, TimeMLP)  # too small to halve
    assert isinstance(px.FlowMatching(SHAPE, architecture="mlp").network, TimeMLP)
    gan = px.GAN(SHAPE, latent=3)
    assert isinstance(gan.generator, ConvDecoder) and isinstance(gan.discriminator, ConvEncoder)
    for family in (px.VAE, px.Autoencoder):
        model = family(SHAPE, latent=3)
        assert isinstance(model.encoder, ConvEncoder) and isinstance(model.decoder, ConvDecoder)
        assert isinstance(family(SHAPE, latent=3, architecture="mlp").encoder, MLP)
        assert isinstance(family((1, 2, 3), latent=3).encoder, MLP)
    for kwargs, message in [
        (dict(features=4, architecture="image"), r"image event shape \(C, H, W\)"),
        (dict(features=SHAPE, film=True), "film"),
        (dict(features=SHAPE, architecture="conv"), "architecture must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            px.FlowMatching(**kwargs)


def test_unet_field_takes_the_flat_view_with_any_batch_time_and_context():
    net = TimeUNet((2, 5, 7), context=3, channels=8, attention=True)  # odd sizes: 5x7 -> 3x4 -> 2x2
    x, context = torch.randn(4, 3, 70), torch.randn(3, 3)
    assert torch.equal(net(x, torch.rand(4, 3), context), torch.zeros(4, 3, 70))  # starts at zero
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    one = net(x, torch.tensor(0.3), context)
    rows = net(x.reshape(12, 70), torch.full((12,), 0.3), context.expand(4, 3, 3).reshape(12, 3))
    torch.testing.assert_close(one.reshape(12, 70), rows)
    assert not torch.allclose(one, net(x, torch.tensor(0.3), -context))  # the context is used


def test_a_unet_flow_has_an_exact_log_determinant_and_trains_every_parameter(images):
    torch.manual_seed(0)
    fm = px.FlowMatching((1, 8, 8), channels=4, solver="rk4", steps=3)
    result = px.fit(fm, images, steps=3, batch_size=16, progress=False, seed=0)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    before = {k: v.detach().clone() for k, v in fm.named_parameters()}
    px.fit(fm, images, steps=3, batch_size=16, progress=False, seed=1)
    for name, p in fm.named_parameters():  # the zero-initialized layers do not leave any dead
        assert not torch.equal(p, before[name]), name
    # Fixed steps (an adaptive solve of a shaken net costs unpredictably): the log-determinant
    # integrated along 16 rk4 steps misses the discrete map's by about 1e-11.
    # Seeded and shaken gently: a field shaken by 0.1 at every parameter can be too stiff for
    # 16 steps (errors of 0.1 nats at some seeds), which says nothing of the log-determinant.
    torch.manual_seed(0)
    small = px.FlowMatching((1, 4, 4), architecture="image", channels=4, solver="rk4", steps=16).double()
    assert small.network.levels == 2 and len(small.network.attention) == 2  # 4 x 4 and 2 x 2
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.03 * torch.randn_like(p))
        z = torch.randn(16, dtype=torch.float64)
        ladj = float(small.transform.forward_and_ladj(z)[1])
    jac = torch.autograd.functional.jacobian(small.transform.forward_value, z)
    assert abs(ladj - float(torch.linalg.slogdet(jac).logabsdet)) < 1e-4 * (1 + abs(ladj))


@pytest.mark.parametrize(
    "build",
    [
        lambda: px.VAE(SHAPE, 3, latent=4, channels=8, hidden=(32,)),  # a mean and a scale a pixel
        lambda: px.VAE(SHAPE, latent=4, channels=8, hidden=(32,), likelihood="continuous_bernoulli"),
        lambda: px.Autoencoder(SHAPE, latent=4, channels=8, hidden=(32,), noise=0.1, particles=8),
        lambda: px.GAN(SHAPE, 3, latent=4, channels=8, hidden=(32,)),
    ],
    ids=["VAE-normal-cond", "VAE-cb", "Autoencoder", "GAN-cond"],
)
def test_convolutional_models_train_every_parameter_and_draw_images(build, images):
    model = build()
    context = torch.randn(32, 3) if model.context_features else None
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    px.fit(model, images, context=context, steps=3, batch_size=16, progress=False, seed=0)
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all() and not torch.equal(p, before[name]), name
    d = model(None if context is None else context[:4])
    assert d.sample().shape == (*d.batch_shape, *SHAPE)
    if d.log_prob_kind is not None:
        assert d.log_prob(images[:4]).shape == (4,)


@pytest.mark.parametrize("shape", [(1, 4, 5), (3, 4, 4)])
def test_pixelcnn_position_sees_only_the_positions_before_it(shape):
    torch.manual_seed(0)
    net = PixelCNN(shape, 3, channels=6, layers=2, context=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    n = shape[0] * shape[1] * shape[2]
    x, context = torch.randn(n), torch.randn(2)
    jac = torch.autograd.functional.jacobian(lambda v: net(v[None], context[None])[0].sum(-1), x)
    seen = jac.abs() > 0
    assert not (seen & torch.ones(n, n, dtype=torch.bool).triu()).any()  # nothing at or after i
    assert seen.sum() > n * (n - 1) / 8  # and much before it: the receptive field grows


def test_a_pixelcnn_model_is_a_normalized_distribution_and_fits_images(images):
    model = px.DiscreteAutoregressive((2, 2, 2), architecture="image", channels=4, layers=1)
    assert isinstance(model.net, PixelCNN)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    every = torch.cartesian_prod(*[torch.tensor([0.0, 1.0])] * 8).reshape(-1, 2, 2, 2)
    with torch.no_grad():
        total = model().log_prob(every.to(torch.get_default_dtype())).logsumexp(0)
    assert abs(float(total)) < 1e-5  # the 256 binary images' probabilities sum to one
    levels = (images * 17).floor()
    model = px.DiscreteAutoregressive(SHAPE, categories=17, channels=16, layers=2)
    assert isinstance(model.net, PixelCNN)
    result = px.fit(model, levels, steps=10, batch_size=16, progress=False, seed=0)
    assert result.losses[-1] < result.losses[0]
    draws = model().sample((2,))
    assert draws.shape == (2, *SHAPE) and model().support.check(draws).all()


def test_multiscale_flow_is_realnvps_image_network_and_scores_digits(images):
    flow = px.RealNVP(SHAPE, transforms=2, channels=8)
    assert isinstance(flow.transform[0], MultiscaleFlow) and len(flow.transform[0].levels) == 2
    assert not isinstance(px.RealNVP(SHAPE, architecture="mlp").transform[0], MultiscaleFlow)
    spline = px.NSF(SHAPE, transforms=1, channels=4).transform[0]
    assert isinstance(spline, MultiscaleFlow) and isinstance(spline.levels[0][0].transformer, RQSpline)
    assert not isinstance(px.NSF(SHAPE, variant="autoregressive").transform[0], MultiscaleFlow)
    with pytest.raises(ValueError, match="even image sides"):
        px.RealNVP((1, 9, 9), architecture="image")
    result = px.fit(flow, images, steps=20, batch_size=32, progress=False, seed=0)
    assert result.losses[-1] < result.losses[0]
    lp = flow().log_prob(images)
    assert lp.shape == (32,) and torch.isfinite(lp).all()


def test_a_logit_pre_transform_counts_its_log_determinant_and_refuses_data_off_its_support(images):
    torch.manual_seed(0)
    flow = px.RealNVP(SHAPE, transforms=1, channels=8, logit=0.05)
    plain = px.RealNVP(SHAPE, transforms=1, channels=8, logit=None)
    plain.load_state_dict(flow.state_dict())
    default = px.RealNVP(SHAPE, transforms=1, channels=8)
    assert isinstance(default.transform[-1], Logit) and default.transform[-1].alpha == 0.05
    # log p(x) = log p_plain(y) + log |dy/dx|, y = logit(0.05 + 0.9 x), dy/dx = 0.9 / (u (1 - u)).
    u = 0.05 + 0.9 * images
    y = torch.log(u) - torch.log1p(-u)
    jacobian = (math.log(0.9) - torch.log(u) - torch.log1p(-u)).flatten(1).sum(1)
    torch.testing.assert_close(flow().log_prob(images), plain().log_prob(y) + jacobian)
    assert (
        flow().support.check(torch.zeros(SHAPE)).all()
        and not flow().support.check(torch.full(SHAPE, 1.2)).all()
    )
    bad = images.clone()
    bad[5, 0, 3, 3] = 1.5
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with pytest.raises(ValueError, match=r"outside \[-0.05556, 1.056\], the support .* first at row 5"):
        px.fit(flow, bad, steps=1, progress=False)
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())
    result = px.fit(flow, images, steps=20, batch_size=32, progress=False, seed=0)
    assert result.losses[-1] < result.losses[0]


@pytest.mark.parametrize("family", [px.FlowMatching, px.Diffusion])
def test_a_unet_model_conditions_on_labels_with_classifier_free_guidance(family):
    digits = px.datasets.digits(image=True, labels=True)
    images = digits.train[:64]
    labels = torch.nn.functional.one_hot(digits.train_labels[:64], 10).to(images.dtype)
    model = family(SHAPE, 10, channels=8, guidance_dropout=0.2, solver="rk4", steps=2)
    assert model.network.context_features == 11  # the labels and the null flag
    result = px.fit(model, images, context=labels, steps=3, batch_size=32, progress=False, seed=0)
    assert result.losses[-1] < result.losses[0]
    wanted = labels[:4]
    torch.manual_seed(0)
    plain = model(wanted).sample()
    torch.manual_seed(0)
    assert torch.equal(model(wanted, guidance=1.0).sample(), plain)
    torch.manual_seed(0)
    strong = model(wanted, guidance=4.0).sample()
    assert strong.shape == (4, *SHAPE) and not torch.allclose(strong, plain)
    if family is px.Diffusion:
        drawn = model.sample((2,), wanted, sampler="heun", steps=3, guidance=4.0)
        assert drawn.shape == (2, 4, *SHAPE) and torch.isfinite(drawn).all()
    lp = model(wanted, guidance=4.0, trace="hutchinson").log_prob(images[:4])
    assert lp.shape == (4,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("family", [px.FlowMatching, px.Diffusion])
def test_channel_standardization_takes_each_channels_statistics_over_its_pixels(family):
    torch.manual_seed(0)
    data = (
        torch.randn(64, 2, 4, 4) * torch.tensor([0.5, 3.0])[:, None, None]
        + torch.tensor([1.0, -2.0])[:, None, None]
    )
    model = family((2, 4, 4), channels=8, standardize="channel", solver="rk4", steps=2)
    model.initialize(data)
    scale = model.standardizer.scale.reshape(2, 16)
    torch.testing.assert_close(scale, data.transpose(0, 1).reshape(2, -1).std(1)[:, None].expand(2, 16))
    torch.testing.assert_close(model.standardizer.loc.reshape(2, 16)[:, 0], data.mean((0, 2, 3)))
    with pytest.raises(ValueError, match="images"):
        family(3, standardize="channel")
    # The default for an unconditional or guided image model: the raw pixels for flow matching,
    # per channel for diffusion; per coordinate for a vector.
    expected = False if family is px.FlowMatching else "channel"
    assert family((2, 4, 4), channels=8).standardize == expected
    assert family((2, 4, 4), 3, channels=8, guidance_dropout=0.1).standardize == expected
    assert family((2, 4, 4), 3, channels=8).standardize == "regression"
    assert family(3).standardize == "marginal"


def test_a_multiscale_flow_saved_before_the_logit_default_loads_as_it_was(tmp_path):
    from pyro_xform.checkpoint import build

    flow = px.RealNVP(SHAPE, transforms=1, channels=8)
    px.save(flow, tmp_path / "flow.pt")
    assert isinstance(px.load(tmp_path / "flow.pt").transform[-1], Logit)
    older = {"family": "RealNVP", "kwargs": {k: v for k, v in flow.config.items() if k != "logit"}}
    assert not isinstance(build(older).transform[-1], Logit)


def test_image_networks_without_a_jax_twin_say_so():
    to_numpyro = pytest.importorskip("pyro_xform.numpyro").to_numpyro
    for model in (px.RealNVP(SHAPE, transforms=1, channels=4), px.FlowMatching(SHAPE, channels=4)):
        with pytest.raises(NotImplementedError, match=r"no (NumPyro|JAX) twin"):
            to_numpyro(model)


def test_a_latent_model_of_image_shape_is_refused_as_a_prior_over_a_flat_code():
    with pytest.raises(ValueError, match=r"features=\(1, 2, 2\); it must equal latent=4"):
        px.VAE(4, latent=4, prior=px.NSF((1, 2, 2)))
    with pytest.raises(ValueError, match=r"got features=\(1, 2, 2\)"):
        px.Autoencoder(4, latent=4, density=px.MAF((1, 2, 2)))


@pytest.mark.parametrize("family", [px.FlowMatching, px.Diffusion])
def test_a_conditional_continuous_model_of_images_broadcasts_its_context(family):
    model = family((1, 2, 3), 2, hidden=(8,), solver="rk4", steps=8)
    context = torch.randn(2, 3, 2)
    d = model(context)
    assert d.batch_shape == (2, 3) and d.event_shape == (1, 2, 3)
    x = d.sample((5,))
    assert x.shape == (5, 2, 3, 1, 2, 3) and d.log_prob(x).shape == (5, 2, 3)
    x1, lp1 = d.rsample_and_log_prob()
    assert x1.shape == (2, 3, 1, 2, 3) and lp1.shape == (2, 3)
    torch.testing.assert_close(d.log_prob(x1), lp1)  # the draw just made is not inverted again
    assert d.expand((4, 2, 3)).sample().shape == (4, 2, 3, 1, 2, 3)
    torch.testing.assert_close(d.log_prob(x1.clone()), lp1, rtol=1e-2, atol=1e-2)  # inverted, 8 steps
