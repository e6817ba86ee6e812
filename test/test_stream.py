"""Streaming segmenter: reset triggers, resolution round trips, independent streams, backends."""

import threading

import numpy as np
import pytest
from ssp_perception.backends import Backend, create_backend
from ssp_perception.backends.torch_backend import TorchBackend
from ssp_perception.classes import UAVID
from ssp_perception.config import preset
from ssp_perception.geometry import reprojection_error
from ssp_perception.models import create_model
from ssp_perception.registration import RegistrationConfig
from ssp_perception.stream import Segmenter, StreamConfig
from ssp_perception.synthetic import synthetic_frames, textured_image
import torch

NET = (64, 96)
FRAME = (144, 240)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model(preset("lite", input_size=NET))


@pytest.fixture(scope="module")
def segmenter(model):
    return Segmenter(model, UAVID)


@pytest.fixture(scope="module")
def frames():
    return list(synthetic_frames(FRAME, 4, seed=1, speed=2.0))


def _stream(segmenter, **kw):
    reg = kw.pop("registration", RegistrationConfig())
    return segmenter.new_stream(StreamConfig(**kw), reg)


def test_first_frame_then_propagation(segmenter, frames):
    stream = _stream(segmenter, compute_similarity=True, return_logits=True)
    first = stream.process(frames[0][0], stamp=0.0, frame_id="cam")
    assert first.reset_reason == "first_frame" and not first.used_state
    assert first.registration is None and first.homography is None
    assert first.frame_index == 0 and first.frames_since_reset == 0
    assert np.isnan(first.tc_estimate) and np.isnan(first.flip_rate)
    np.testing.assert_array_equal(first.similarity, 0.0)  # no state: s = 0
    for k, (frame, h_true) in enumerate(frames[1:], start=1):
        res = stream.process(frame, stamp=0.05 * k, frame_id="cam")
        assert res.reset_reason == "" and res.used_state
        assert res.registration.success, res.registration.reason
        assert reprojection_error(res.homography, h_true, FRAME) < 1.0
        assert res.frame_index == k and res.frames_since_reset == k
        assert 0.0 <= res.tc_estimate <= 1.0 and 0.0 <= res.flip_rate <= 1.0
        assert res.logits.shape == (UAVID.num_classes,) + NET
        assert set(res.timings_ms) == {"preprocess", "registration", "model", "postprocess",
                                       "consistency", "total"}


def test_propagate_off_is_the_image_model_with_registration_and_tc(segmenter, frames):
    ssp = _stream(segmenter, return_logits=True)
    image_only = _stream(segmenter, return_logits=True, propagate=False)
    fresh = _stream(segmenter, return_logits=True)
    for k, (frame, _) in enumerate(frames):
        fused = ssp.process(frame, stamp=0.05 * k)
        plain = image_only.process(frame, stamp=0.05 * k)
        fresh.reset()  # a stream reset before every frame runs the image model alone
        alone = fresh.process(frame, stamp=0.05 * k)
        np.testing.assert_array_equal(plain.logits, alone.logits)
        assert not plain.used_state and plain.reset_reason == ("first_frame" if k == 0 else "")
        if k > 0:  # registration and the online TC estimate still run
            assert plain.registration.success and plain.homography is not None
            assert 0.0 <= plain.tc_estimate <= 1.0
            assert fused.used_state and not np.array_equal(fused.logits, plain.logits)


def test_outputs_are_sane(segmenter, frames):
    stream = _stream(segmenter, compute_similarity=True)
    for frame, _ in frames[:2]:
        res = stream.process(frame)
        assert res.labels.dtype == np.uint8 and res.labels.shape == FRAME
        assert res.labels.max() < UAVID.num_classes
        for m in (res.confidence, res.similarity):
            assert m.dtype == np.float32 and m.shape == FRAME
            assert m.min() >= 0.0 and m.max() <= 1.0
        assert 1.0 / UAVID.num_classes <= res.mean_confidence <= 1.0
    assert res.similarity.max() > 0.0  # with state, s is a real prediction


def test_labels_match_the_image_model_on_the_first_frame(model, segmenter, frames):
    stream = _stream(segmenter, return_logits=True)
    res = stream.process(frames[0][0])
    x = segmenter.normalise(np.asarray(torch.nn.functional.interpolate(
        torch.from_numpy(frames[0][0]).permute(2, 0, 1)[None].float(), size=NET,
        mode="area")[0].permute(1, 2, 0).round().to(torch.uint8)))
    with torch.inference_mode():
        logits = model.output_logits(model.image_step(x)[0], NET)
    # Preprocessing resizes with OpenCV INTER_AREA; torch "area" differs only by rounding.
    assert torch.allclose(torch.from_numpy(res.logits), logits[0], atol=0.5)


@pytest.mark.parametrize("mode,net", [("resize", NET), ("pad", (384, 672))])
def test_odd_input_sizes_round_trip(segmenter, mode, net):
    stream = _stream(segmenter, resize_mode=mode, compute_similarity=True,
                     registration=RegistrationConfig(method="identity"))
    image = textured_image((359, 641))
    for _ in range(2):
        res = stream.process(image)
        assert res.network_size == net
        assert res.labels.shape == (359, 641)
        assert res.confidence.shape == (359, 641) and res.similarity.shape == (359, 641)
    assert res.used_state


def test_bilinear_label_upsampling(segmenter, frames):
    fast = _stream(segmenter).process(frames[0][0])
    sharp = _stream(segmenter, label_upsampling="bilinear").process(frames[0][0])
    assert sharp.labels.shape == FRAME and sharp.labels.max() < UAVID.num_classes
    assert (fast.labels == sharp.labels).mean() > 0.8  # same prediction, different edges


def _run(stream, frames, stamps, ids=None, sizes=None):
    out = []
    for i, (frame, _) in enumerate(frames):
        if sizes and sizes[i]:
            frame = np.ascontiguousarray(frame[:sizes[i][0], :sizes[i][1]])
        out.append(stream.process(frame, stamp=stamps[i], frame_id=(ids or ["c"] * 9)[i]))
    return out


@pytest.mark.parametrize("kwargs,expected", [
    ({"stamps": [0.0, 0.05, 0.02]}, "time_backwards"),
    ({"stamps": [0.0, 0.05, 2.0]}, "time_gap"),
    ({"stamps": [0.0, 0.05, 0.1], "ids": ["a", "a", "b"]}, "frame_id_change"),
    ({"stamps": [0.0, 0.05, 0.1], "sizes": [None, None, (128, 224)]}, "size_change"),
])
def test_reset_triggers(segmenter, frames, kwargs, expected):
    results = _run(_stream(segmenter), frames[:3], **kwargs)
    assert [r.reset_reason for r in results] == ["first_frame", "", expected]
    last = results[-1]
    assert not last.used_state and last.frames_since_reset == 0 and last.reset_detail
    assert last.frame_index == 2


def test_triggers_can_be_switched_off(segmenter, frames):
    stream = _stream(segmenter, max_gap_s=0.0, reset_on_backwards=False,
                     reset_on_frame_id_change=False)
    results = _run(stream, frames[:4], stamps=[0.0, 100.0, 50.0, 50.05], ids=list("abcd"))
    assert [r.reset_reason for r in results] == ["first_frame", "", "", ""]
    assert all(r.used_state for r in results[1:])


def test_manual_reset(segmenter, frames):
    stream = _stream(segmenter)
    stream.process(frames[0][0])
    stream.reset()
    res = stream.process(frames[1][0])
    assert res.reset_reason == "manual" and not res.used_state
    stream.reset("service")
    assert stream.process(frames[2][0]).reset_reason == "service"
    assert stream.process(frames[3][0]).reset_reason == ""
    with pytest.raises(ValueError):
        stream.reset("")


@pytest.mark.parametrize("policy", ["reset", "identity"])
def test_registration_failure_policy(segmenter, frames, policy):
    stream = _stream(segmenter, on_registration_failure=policy)
    stream.process(frames[0][0])
    res = stream.process(textured_image(FRAME, seed=99))  # unrelated view
    assert res.registration is not None and not res.registration.success
    if policy == "reset":
        assert res.reset_reason == "registration_failed" and not res.used_state
        assert res.reset_detail == res.registration.reason and res.homography is None
        # The failed frame becomes the registration reference: the next frame of the new
        # view propagates state again instead of failing for want of a previous frame.
        again = stream.process(textured_image(FRAME, seed=99))
        assert again.reset_reason == "" and again.used_state and again.registration.success
        assert again.frames_since_reset == 1
    else:
        assert res.reset_reason == "" and res.used_state
        np.testing.assert_array_equal(res.homography, np.eye(3))
        assert res.frames_since_reset == 1


def test_two_streams_keep_independent_state(segmenter, frames):
    other = list(synthetic_frames(FRAME, 4, seed=7, speed=-2.0))

    def alone(seq):
        s = _stream(segmenter, return_logits=True)
        return [s.process(f, stamp=0.05 * i).logits for i, (f, _) in enumerate(seq)]

    ref_a, ref_b = alone(frames), alone(other)
    out = {"a": [], "b": []}
    streams = {"a": _stream(segmenter, return_logits=True),
               "b": _stream(segmenter, return_logits=True)}

    def worker(name, seq):
        for i, (f, _) in enumerate(seq):
            out[name].append(streams[name].process(f, stamp=0.05 * i).logits)

    threads = [threading.Thread(target=worker, args=("a", frames)),
               threading.Thread(target=worker, args=("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, ref in ((out["a"], ref_a), (out["b"], ref_b)):
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, atol=1e-5)


def test_bad_input_is_rejected_and_state_kept(segmenter, frames):
    stream = _stream(segmenter)
    stream.process(frames[0][0])
    for bad in (frames[1][0].astype(np.float32), frames[1][0][..., :2], frames[1][0][:4, :4]):
        with pytest.raises(ValueError):
            stream.process(bad)
    res = stream.process(frames[1][0])
    assert res.used_state and res.reset_reason == ""


def test_state_is_replaced_not_accumulated(segmenter, frames):
    stream = _stream(segmenter)
    stream.process(frames[0][0])
    shapes = (stream.state.prev_logits.shape, stream.state.prev_feat.shape)
    states = []   # held, so that no freed tensor's id can be reused by a later one
    for frame, _ in frames[1:]:
        stream.process(frame)
        states.append(stream.state.prev_logits)
        assert (stream.state.prev_logits.shape, stream.state.prev_feat.shape) == shapes
    assert stream.state.prev_labels.shape == (36, 60)  # consistency_scale 0.25 of 144x240
    assert len({id(s) for s in states}) == len(frames) - 1   # a new tensor every frame


@pytest.mark.parametrize("fusion,state_size", [
    ({}, (16, 24)),  # lite: fused logits kept at stride 4
    ({"upsample_before_mixing": True, "sim_op": "conv"}, NET),  # spec: at the network size
])
def test_state_resolution_follows_the_model_and_outputs_do_not(frames, fusion, state_size):
    torch.manual_seed(0)
    seg = Segmenter(create_model(preset("lite", input_size=NET, **fusion)), UAVID)
    stream = _stream(seg, compute_similarity=True, return_logits=True)
    for frame, _ in frames[:3]:
        res = stream.process(frame)
    assert res.used_state
    assert tuple(stream.state.prev_logits.shape[-2:]) == state_size
    assert res.labels.shape == res.similarity.shape == FRAME
    assert res.logits.shape == (UAVID.num_classes,) + NET


def test_network_logits_is_the_models_upsampling(model, segmenter):
    z = torch.randn(1, UAVID.num_classes, 16, 24)
    up = segmenter.network_logits(z, NET)
    torch.testing.assert_close(up, model.output_logits(z, NET), atol=1e-5, rtol=0)
    full = torch.randn(1, UAVID.num_classes, *NET)
    assert segmenter.network_logits(full, NET) is full


@pytest.mark.parametrize("kwargs,needle", [
    ({"input_size": (65, 96)}, "input_size"),
    ({"resize_mode": "crop"}, "resize_mode"),
    ({"on_registration_failure": "ignore"}, "on_registration_failure"),
    ({"max_gap_s": -1.0}, "max_gap_s"),
    ({"consistency_scale": 2.0}, "consistency_scale"),
    ({"label_upsampling": "cubic"}, "label_upsampling"),
    ({"propagate": "no"}, "propagate must be true or false"),
])
def test_stream_config_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        StreamConfig(**kwargs)


def test_segmenter_checks_class_count(model):
    from ssp_perception.classes import RURALSCAPES
    with pytest.raises(ValueError, match="classes"):
        Segmenter(model, RURALSCAPES)


def test_torch_backend(model):
    backend = create_backend("torch", model)
    assert isinstance(backend, TorchBackend) and isinstance(backend, Backend)
    assert backend.num_classes == UAVID.num_classes and backend.device.type == "cpu"
    x = torch.randn(1, 3, *NET)
    logits, feat = backend.image_step(x)
    fused = tuple(n // model.fusion_stride for n in NET)  # lite fuses at stride 4
    assert logits.shape == (1, UAVID.num_classes) + fused
    out, feat2, sim = backend.ssp_step(x, logits, feat, torch.eye(3)[None], torch.zeros(1))
    # use_prev = 0 gives the plain image output.
    torch.testing.assert_close(out, logits)
    assert sim.shape == (1, 1) + fused
    with pytest.raises(ValueError, match="multiples of 32"):
        backend.image_step(torch.randn(1, 3, 60, 96))
    with pytest.raises(ValueError, match="homography"):
        backend.ssp_step(x, logits, feat, torch.eye(3), torch.zeros(1))


def test_torch_backend_bfloat16_on_cpu(model):
    backend = TorchBackend(model, dtype="bfloat16")
    x = torch.randn(1, 3, *NET)
    logits, feat = backend.image_step(x)
    fused = tuple(n // model.fusion_stride for n in NET)
    assert logits.shape == (1, UAVID.num_classes) + fused and torch.isfinite(logits).all()
    assert logits.dtype == feat.dtype == torch.float32  # state stays float32
    out, _, sim = backend.ssp_step(x, logits, feat, torch.eye(3)[None], torch.ones(1))
    with torch.inference_mode():
        ref, _, _ = model.step(x, logits, feat, torch.eye(3)[None], torch.ones(1))
    assert out.dtype == torch.float32 and torch.isfinite(sim).all()
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_segmenter_from_artifact(model, tmp_path, frames):
    from ssp_perception.artifact import save_artifact
    path = tmp_path / "lite.safetensors"
    save_artifact(path, model, UAVID)
    seg = Segmenter.from_artifact(path)
    assert seg.class_set == UAVID and seg.input_size == NET
    a = _stream(seg, return_logits=True).process(frames[0][0])
    b = _stream(Segmenter(model, UAVID), return_logits=True).process(frames[0][0])
    np.testing.assert_allclose(a.logits, b.logits, atol=1e-5)


@pytest.mark.parametrize("kwargs,error,needle", [
    ({"dtype": "float16"}, ValueError, "CUDA"),
    ({"dtype": "int8"}, ValueError, "dtype"),
    ({"cuda_graphs": True}, ValueError, "CUDA"),
    ({"device": "cuda"}, RuntimeError, "CUDA"),
])
def test_torch_backend_guards(model, kwargs, error, needle):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(error, match=needle):
        TorchBackend(model, **kwargs)


def test_unknown_backend_is_a_clear_error(model):
    with pytest.raises(ValueError, match="unknown backend .tflite.; known: .*torch"):
        create_backend("tflite", model)
