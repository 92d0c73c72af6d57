"""Tests of leukemia_wbc.models.backbones: timm backbones by name, local and offline weights."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from leukemia_wbc.models import backbones
from leukemia_wbc.models.backbones import create_backbone, feature_dim, read_state_dict


def _assert_same_tensors(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    for key, value in state.items():
        assert torch.equal(value, expected[key]), key


@pytest.fixture(scope="module")
def resnet18_full() -> nn.Module:
    """A randomly initialised resnet18 with its ImageNet classifier (as timm would save it)."""
    torch.manual_seed(0)
    return timm.create_model("resnet18")


# --- read_state_dict -------------------------------------------------------------------------


def test_read_state_dict_plain_and_nested(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.randn(2, 3), "a.bias": torch.zeros(2)}
    torch.save(tensors, tmp_path / "plain.pth")
    for key in ("state_dict", "model", "state_dict_ema"):
        torch.save({key: tensors, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, tmp_path / "c.ckpt")
        loaded = read_state_dict(tmp_path / "c.ckpt")
        assert loaded.keys() == tensors.keys()
    loaded = read_state_dict(str(tmp_path / "plain.pth"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_read_state_dict_prefers_state_dict_over_ema(tmp_path: Path) -> None:
    torch.save(
        {"state_dict_ema": {"w": torch.zeros(1)}, "state_dict": {"w": torch.ones(1)}},
        tmp_path / "c.pth",
    )
    assert read_state_dict(tmp_path / "c.pth")["w"].item() == 1.0


def test_read_state_dict_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.arange(4.0)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "w.safetensors")["w"], torch.arange(4.0))


def test_read_state_dict_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "nodict.ckpt")
    with pytest.raises(ValueError, match=r"nodict\.ckpt.*'state_dict'.*found keys 'epoch'"):
        read_state_dict(tmp_path / "nodict.ckpt")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth holds a list"):
        read_state_dict(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"text\.pth"):
        read_state_dict(tmp_path / "text.pth")


class _Custom:
    pass


def test_read_state_dict_refuses_arbitrary_objects(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Custom()}, tmp_path / "obj.ckpt")
    with pytest.raises(ValueError, match=r"obj\.ckpt.*could run code: refused"):
        read_state_dict(tmp_path / "obj.ckpt")


# --- create_backbone: random init and names --------------------------------------------------


def test_random_init_gives_pooled_features() -> None:
    model = create_backbone("mobilenetv2_050")
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, feature_dim(model)) == (2, model.num_features)


def test_feature_dim_prefers_head_hidden_size() -> None:
    class _Fake(nn.Module):
        num_features = 512
        head_hidden_size = 4096

    assert feature_dim(_Fake()) == 4096
    with pytest.raises(ValueError, match="backbone"):
        feature_dim(nn.Linear(2, 2))


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"'resnt18'.*close matches: .*resnet18"):
        create_backbone("resnt18")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="in_chans"):
        create_backbone("resnet18", in_chans=0)
    with pytest.raises(ValueError, match="num_classes"):
        create_backbone("resnet18", num_classes=4)
    with pytest.raises(ValueError, match="weights"):
        create_backbone("resnet18", weights=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="argument 'prefix'"):
        create_backbone("resnet18", prefix="model.")


# --- create_backbone: local files ------------------------------------------------------------


def test_timm_state_dict_with_classifier(tmp_path: Path, resnet18_full: nn.Module) -> None:
    torch.save(resnet18_full.state_dict(), tmp_path / "resnet18.pth")
    model = create_backbone("resnet18", weights=tmp_path / "resnet18.pth")
    expected = {k: v for k, v in resnet18_full.state_dict().items() if not k.startswith("fc.")}
    _assert_same_tensors(model, expected)


def test_lightning_checkpoint_prefix_found(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_backbone("mobilenetv2_050")
    checkpoint = {
        "epoch": 4,
        "hyper_parameters": {"lr": 1e-3, "backbone": "mobilenetv2_050"},
        "state_dict": {
            **{f"model.backbone.{k}": v for k, v in source.state_dict().items()},
            "model.head.weight": torch.randn(4, 1280),
            "model.head.bias": torch.zeros(4),
        },
    }
    torch.save(checkpoint, tmp_path / "epoch=4.ckpt")
    model = create_backbone("mobilenetv2_050", weights=str(tmp_path / "epoch=4.ckpt"))
    _assert_same_tensors(model, source.state_dict())


def test_explicit_prefix_between_two_networks(tmp_path: Path) -> None:
    torch.manual_seed(2)
    first, second = create_backbone("mobilenetv2_050"), create_backbone("mobilenetv2_050")
    state = {f"model.cell.{k}": v for k, v in first.state_dict().items()}
    state |= {f"model.nucleus.{k}": v for k, v in second.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "dual.ckpt")
    with pytest.raises(ValueError, match=r"'model\.cell\.', 'model\.nucleus\.'.*prefix="):
        create_backbone("mobilenetv2_050", weights=tmp_path / "dual.ckpt")
    model = create_backbone(
        "mobilenetv2_050", weights=tmp_path / "dual.ckpt", prefix="model.nucleus."
    )
    _assert_same_tensors(model, second.state_dict())
    with pytest.raises(ValueError, match=r"argument 'prefix'.*'model\.other\.'"):
        create_backbone("mobilenetv2_050", weights=tmp_path / "dual.ckpt", prefix="model.other.")


def test_torchvision_resnet_state_dict(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv_resnet18.pth")
    model = create_backbone("resnet18", weights=tmp_path / "tv_resnet18.pth").eval()
    reference.fc = nn.Identity()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))


@pytest.mark.parametrize("in_chans", [1, 4])
def test_input_conv_adapted(tmp_path: Path, resnet18_full: nn.Module, in_chans: int) -> None:
    torch.save(resnet18_full.state_dict(), tmp_path / "resnet18.pth")
    model = create_backbone("resnet18", weights=tmp_path / "resnet18.pth", in_chans=in_chans)
    rgb = resnet18_full.conv1.weight
    if in_chans == 1:
        expected = rgb.sum(dim=1, keepdim=True)
    else:
        expected = torch.cat([rgb, rgb[:, :1]], dim=1) * 3 / 4
    torch.testing.assert_close(model.conv1.weight, expected)
    torch.testing.assert_close(model.layer4[1].conv2.weight, resnet18_full.layer4[1].conv2.weight)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, in_chans, 64, 64)).shape == (1, 512)


def test_wrong_architecture_names_expected(tmp_path: Path, resnet18_full: nn.Module) -> None:
    torch.save(resnet18_full.state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"resnet18\.pth.*'mobilenetv2_050'.*missing keys"):
        create_backbone("mobilenetv2_050", weights=tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"'resnet34'.*missing keys \(layer1\.2\."):
        create_backbone("resnet34", weights=tmp_path / "resnet18.pth")


def test_shape_mismatch_reported(tmp_path: Path, resnet18_full: nn.Module) -> None:
    state = dict(resnet18_full.state_dict())
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"shape mismatches \(layer1\.0\.conv1\.weight"):
        create_backbone("resnet18", weights=tmp_path / "bad.pth")


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match=r"no_such_weights\.pth"):
        create_backbone("resnet18", weights="no_such_weights.pth")


@pytest.mark.slow
def test_torchvision_vgg_converted(tmp_path: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.vgg11(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv_vgg11.pth")
    model = create_backbone("vgg11", weights=tmp_path / "tv_vgg11.pth")
    torch.testing.assert_close(
        model.pre_logits.fc1.weight, reference.classifier[0].weight.reshape(4096, 512, 7, 7)
    )
    assert feature_dim(model) == 4096


# --- create_backbone: "imagenet" --------------------------------------------------------------


def test_imagenet_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"HF_HUB_OFFLINE.*local file.*weights="):
        create_backbone("resnet18", weights="imagenet", cache_dir=tmp_path)
    assert time.monotonic() - start < 5.0


def test_imagenet_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(backbones, "_reachable", lambda host, port, timeout: False)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"no connection to huggingface\.co:443.*local file"):
        create_backbone("resnet18", weights="imagenet", cache_dir=tmp_path)
    assert time.monotonic() - start < 5.0


def test_reachable_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert backbones._reachable("127.0.0.1", port, 1.0)
    assert not backbones._reachable("127.0.0.1", port, 1.0)  # closed: refused

    def hang(*args: object, **kwargs: object) -> None:
        time.sleep(2.0)
        raise TimeoutError("timed out")  # what a connect that never answers ends with

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert not backbones._reachable("example.invalid", 443, 0.2)
    assert time.monotonic() - start < 1.5


def test_imagenet_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = timm.models.get_pretrained_cfg("mobilenetv2_050")
    assert cfg is not None and cfg.hf_hub_id
    torch.manual_seed(4)
    source = timm.create_model("mobilenetv2_050")
    repo = tmp_path / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()},
        str(snapshot / "model.safetensors"),
    )
    model = create_backbone("mobilenetv2_050", weights="imagenet", cache_dir=tmp_path)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    _assert_same_tensors(model, expected)
