from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from leukemia_wbc.data.datamodule import IMAGENET_MEAN, IMAGENET_STD, WBCDataModule, collate_samples
from leukemia_wbc.data.splits import Split
from leukemia_wbc.data.synthetic import SyntheticWBC
from leukemia_wbc.transforms.stain import MacenkoNormalizer


@pytest.fixture(scope="module")
def synthetic() -> SyntheticWBC:
    return SyntheticWBC(96, size=32, seed=0, n_patients=12)


def test_kfold_split_is_grouped_and_complete(synthetic):
    tested = []
    for fold in range(4):
        dm = WBCDataModule(synthetic, size=32, n_splits=4, fold=fold, augment=False)
        dm.setup()
        assert dm.split is not None
        dm.split.check(len(synthetic), synthetic.groups)
        tested.append(dm.split.test)
    assert np.array_equal(np.sort(np.concatenate(tested)), np.arange(len(synthetic)))


def test_loader_yields_uint8_and_device_stage_normalises(synthetic):
    dm = WBCDataModule(synthetic, size=32, batch_size=8, n_splits=4, augment=False)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 32, 32)
    assert batch["mask"].shape == (8, 1, 32, 32) and len(batch["group"]) == 8
    raw = batch["image"].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert "skipped" not in out and out["image"].dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(out["image"], (raw.float() / 255 - mean) / std, atol=1e-6)


class _Pixelwise(nn.Module):
    """Replaces the image with its nucleus mask, then flips and rotates both."""

    def __init__(self) -> None:
        super().__init__()
        from leukemia_wbc.transforms import paper_augmentation

        self.aug = paper_augmentation(contrast=0.0)

    def forward(self, batch):
        batch = dict(batch)
        batch["image"] = batch["mask"].float().expand(-1, 3, -1, -1).contiguous()
        return self.aug(batch)


def test_augmentation_keeps_mask_aligned(synthetic):
    dm = WBCDataModule(
        synthetic,
        size=32,
        batch_size=16,
        n_splits=4,
        augment=_Pixelwise(),
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    batch.pop("skipped")
    torch.manual_seed(0)
    out = dm.device_transform(batch, train=True)
    image_mask = out["image"][:, :1] > 0.5
    mask = out["mask"].bool()
    assert out["mask"].dtype == torch.uint8 and set(out["mask"].unique().tolist()) <= {0, 1}
    iou = (image_mask & mask).sum() / (image_mask | mask).sum()
    assert iou > 0.9
    # and the augmentation did move things
    assert not torch.equal(out["mask"], batch["mask"])


def test_no_augmentation_outside_training(synthetic):
    dm = WBCDataModule(synthetic, size=32, batch_size=4, n_splits=4)
    batch = collate_samples([synthetic[i] for i in range(4)])
    batch.pop("skipped")
    a = dm.device_transform(batch, train=False)["image"]
    b = dm.device_transform(batch, train=False)["image"]
    assert torch.equal(a, b)
    c = dm.device_transform(batch, train=True)["image"]
    assert not torch.equal(a, c)


def test_class_weights_and_balanced_sampler():
    ds = SyntheticWBC(200, size=16, seed=1, n_patients=20, class_weights=[6, 2, 1, 1])
    dm = WBCDataModule(ds, size=16, batch_size=50, n_splits=5, balanced_sampler=True, augment=False)
    dm.setup()
    w = dm.class_weights()
    assert w.shape == (4,) and w[0] < w[1] < w[2] and abs(float(w.mean()) - 1.0) < 1e-5
    labels = torch.cat([b["label"] for b in dm.train_dataloader()])
    counts = torch.bincount(labels, minlength=4).float() / len(labels)
    assert counts.min() > 0.15  # rare classes drawn about as often as the common one


def test_holdout_and_given_split(synthetic):
    dm = WBCDataModule(synthetic, size=32, split="holdout", val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert dm.split is not None and len(dm.split.test) > 0
    fixed = Split(np.arange(0, 60), np.arange(60, 80), np.arange(80, 96))
    dm2 = WBCDataModule(synthetic, size=32, split=fixed)
    dm2.setup()
    assert dm2.split is fixed


def test_bad_arguments(synthetic):
    with pytest.raises(ValueError, match="split must be"):
        WBCDataModule(synthetic, split="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        WBCDataModule(synthetic, batch_size=0)


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4))
        self.seen: list[torch.dtype] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["image"].dtype)
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_runs_device_stage_with_workers(synthetic):
    dm = WBCDataModule(synthetic, size=32, batch_size=16, n_splits=4, num_workers=2)
    model = _Tiny()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=dm)
    assert model.seen and all(d == torch.float32 for d in model.seen)


# -- stain normalisation from a config -------------------------------------------------------------
def test_stain_normalization_choices(synthetic):
    for choice in (True, "torch"):
        stain = WBCDataModule(synthetic, size=32, stain_normalization=choice).pipeline.stain
        assert isinstance(stain, MacenkoNormalizer) and stain.backend == "torch"
    for choice in (False, None):
        assert WBCDataModule(synthetic, size=32, stain_normalization=choice).pipeline.stain is None
    with pytest.raises(ValueError, match="stain_normalization must be") as info:
        WBCDataModule(synthetic, size=32, stain_normalization="opencv")  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "'torch', 'staintools'" in message and "'opencv'" in message


#: The ``dataset`` of a data config: eight SyntheticWBC cells.
DATASET = "{class_path: leukemia_wbc.data.synthetic.SyntheticWBC, init_args: {n: 8, size: 32}}"


def _data_parser():
    """jsonargparse (skipped when absent) and a parser of a config's ``data`` section."""
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    parser.add_class_arguments(WBCDataModule, "data")
    return jsonargparse, parser


def test_stain_normalization_is_parsed_from_a_config(tmp_path):
    jsonargparse, parser = _data_parser()
    for choice in ("staintools", "torch"):
        config = tmp_path / f"{choice}.yaml"
        config.write_text(f"data:\n  dataset: {DATASET}\n  stain_normalization: {choice}\n")
        cfg = parser.parse_args(["--config", str(config)])
        assert cfg.data.stain_normalization == choice
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm.pipeline.stain, MacenkoNormalizer) and dm.pipeline.stain.backend == "torch"
    config.write_text(f"data:\n  dataset: {DATASET}\n  stain_normalization: opencv\n")
    with pytest.raises(jsonargparse.ArgumentError, match="stain_normalization"):
        parser.parse_args(["--config", str(config)])


def test_staintools_stain_normalization_fits_on_seeded_training_images():
    pytest.importorskip("staintools")
    ds = SyntheticWBC(16, size=32, seed=0, n_patients=16)
    split = Split(np.arange(10), np.arange(10, 13), np.arange(13, 16))
    options = {"size": 32, "batch_size": 4, "augment": False, "stain_fit_samples": 4}
    dm = WBCDataModule(ds, stain_normalization="staintools", **options)
    assert dm.hparams["stain_normalization"] == "staintools"
    fold = dm.with_split(split)  # deep-copies the pipeline, staintools normaliser included
    fold.setup()
    stain = fold.pipeline.stain
    assert isinstance(stain, MacenkoNormalizer) and stain.backend == "staintools"
    assert stain is not dm.pipeline.stain and bool(stain.fitted)
    assert not bool(dm.pipeline.stain.fitted)
    # the same seeded training images as the torch backend, and the target fitted on them
    torch_fold = WBCDataModule(ds, stain_normalization=True, **options).with_split(split)
    torch_fold.setup()
    assert fold.stain_fit_indices is not None and torch_fold.stain_fit_indices is not None
    assert np.array_equal(fold.stain_fit_indices, torch_fold.stain_fit_indices)
    assert set(fold.stain_fit_indices.tolist()) <= set(split.train.tolist())
    images = torch.stack([ds[int(i)]["image"] for i in fold.stain_fit_indices])
    expected = MacenkoNormalizer(backend="staintools").fit(images)
    assert torch.equal(stain.stain_matrix, expected.stain_matrix)
    assert torch.equal(stain.max_concentrations, expected.max_concentrations)
    # a batch goes through, normalised, and a fresh module given the state does the same
    batch = next(iter(fold.val_dataloader()))
    batch.pop("skipped", None)
    raw = batch["image"].clone()
    out = fold.device_transform(dict(batch), train=False)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 3, 32, 32)
    assert not bool(stain.last_passthrough.any())
    assert not torch.equal(stain.normalize(raw)[0], raw)
    fresh = WBCDataModule(ds, stain_normalization="staintools", **options).with_split(split)
    fresh.load_state_dict(fold.state_dict())
    assert torch.equal(fresh.device_transform(dict(batch), train=False)["image"], out["image"])


def test_collate_keeps_a_cell_mask_only_when_every_sample_has_one(tmp_path):
    """ALL-IDB2's masks mix the colour code (nucleus and cell) with binary nucleus masks."""
    from leukemia_wbc.data.allidb import ALLIDB2
    from tests.conftest import make_fixture

    root = make_fixture("allidb", tmp_path)
    ds = ALLIDB2(root, mask_root=root / "ALL_IDB2_masks", size=16)
    samples = [ds[i] for i in range(3)]  # Im002_1's mask is binary: no cell mask
    assert ["cell_mask" in s for s in samples] == [True, False, True]
    batch = collate_samples(samples)
    assert "cell_mask" not in batch and batch["mask"].shape == (3, 1, 16, 16)
    both = collate_samples([samples[0], samples[2]])
    assert both["cell_mask"].shape == (2, 1, 16, 16)
    del samples[1]["mask"]  # a sample without the nucleus mask is still an error
    with pytest.raises(ValueError, match="samples with different keys in one batch"):
        collate_samples(samples)


# -- options in groups, the dataset left as it is ------------------------------------------------
def test_the_dataset_given_keeps_its_size(synthetic):
    assert synthetic.size == (32, 32)
    dm = WBCDataModule(synthetic, size=16, batch_size=4, n_splits=4, augment=False)
    assert synthetic.size == (32, 32) and dm.dataset is not synthetic
    assert dm.dataset.size == (16, 16) and dm.dataset.records is synthetic.records
    assert synthetic[0]["image"].shape == (3, 32, 32)
    dm.setup()
    assert next(iter(dm.val_dataloader()))["image"].shape == (4, 3, 16, 16)
    assert WBCDataModule(synthetic, size=None).dataset is synthetic  # nothing to change


def test_grouped_and_flat_options_are_the_same_settings(synthetic):
    from leukemia_wbc.data import LoaderOptions, PipelineOptions, SplitOptions

    grouped = WBCDataModule(
        synthetic,
        size=32,
        split=SplitOptions(kind="holdout", val_fraction=0.25, test_fraction=0.25, seed=3),
        pipeline=PipelineOptions(equalize="clahe", augment=False, mean=(0, 0, 0)),
        loader=LoaderOptions(balanced_sampler=True),
    )
    flat = WBCDataModule(
        synthetic, size=32, split="holdout", val_fraction=0.25, test_fraction=0.25, seed=3,
        equalize="clahe", augment=False, mean=(0, 0, 0), balanced_sampler=True,
    )  # fmt: skip
    assert grouped.split_options == flat.split_options
    assert grouped.pipeline_options == flat.pipeline_options
    assert grouped.loader_options == flat.loader_options
    assert dict(grouped.hparams) == dict(flat.hparams)
    grouped.setup()
    flat.setup()
    assert grouped.split is not None and flat.split is not None
    assert np.array_equal(grouped.split.test, flat.split.test)
    assert np.array_equal(grouped.split.val, flat.split.val)


def test_a_flat_keyword_replaces_its_group_field(synthetic, caplog):
    from leukemia_wbc.data import SplitOptions

    with caplog.at_level("WARNING", logger="leukemia_wbc.data.options"):
        dm = WBCDataModule(synthetic, size=32, split=SplitOptions(fold=1, n_splits=4), fold=2)
    assert dm.split_options == SplitOptions(fold=2, n_splits=4)
    assert "fold=2 replaces split.fold=1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="leukemia_wbc.data.options"):
        WBCDataModule(synthetic, size=32, split=SplitOptions(n_splits=4), fold=2)
    assert caplog.text == ""  # the group left fold at its default: nothing is overridden


def test_unknown_keyword_and_bad_option_values(synthetic):
    from leukemia_wbc.data import LoaderOptions, PipelineOptions

    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['n_fold'\]"):
        WBCDataModule(synthetic, n_fold=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="stain_fit_samples must be at least 1, got 0"):
        PipelineOptions(stain_fit_samples=0)
    with pytest.raises(ValueError, match=r"stain_augmentation must lie in \[0, 1\), got 1.5"):
        WBCDataModule(synthetic, stain_augmentation=1.5)
    with pytest.raises(ValueError, match="num_workers must be 0 or more, got -1"):
        LoaderOptions(num_workers=-1)


def test_flat_keywords_are_exactly_the_group_fields():
    import dataclasses
    import typing

    from leukemia_wbc.data import FlatOptions, LoaderOptions, PipelineOptions, SplitOptions

    groups = (SplitOptions, PipelineOptions, LoaderOptions)
    fields = {
        name: hint
        for group in groups
        for name, hint in typing.get_type_hints(group).items()
        if name != "kind"  # the split argument itself
    }
    assert typing.get_type_hints(FlatOptions) == fields
    assert len(fields) == sum(len(dataclasses.fields(g)) for g in groups) - 1


def test_hyperparameters_keep_the_checkpoint_keys(synthetic):
    dm = WBCDataModule(synthetic, size=32, stain_normalization=True, background_removal=True,
                       equalize="hist", colour="grayscale")  # fmt: skip
    assert set(dm.hparams) == {
        "size", "batch_size", "num_workers", "fold", "n_splits", "val_fraction",
        "test_fraction", "seed", "stain_fit_samples", "equalize", "colour",
        "stain_augmentation", "mean", "std", "balanced_sampler", "pin_memory",
        "stain_normalization", "background_removal",
    }  # fmt: skip
    assert dm.hparams["stain_normalization"] is True and dm.hparams["background_removal"] is True
    assert dm.hparams["equalize"] == "hist" and dm.hparams["colour"] == "grayscale"
    assert dm.hparams["mean"] == IMAGENET_MEAN and dm.hparams["size"] == 32


def test_grouped_and_flat_keys_parse_from_a_config(tmp_path):
    _, parser = _data_parser()
    config = tmp_path / "grouped.yaml"
    config.write_text(
        f"data:\n  dataset: {DATASET}\n  size: 16\n"
        "  split: {kind: holdout, val_fraction: 0.25}\n"
        "  pipeline: {equalize: clahe, augment: false}\n  loader: {num_workers: 0}\n"
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(parser.parse_args(["--config", str(config)])).data
    assert dm.split_options.kind == "holdout" and dm.split_options.val_fraction == 0.25
    assert dm.pipeline_options.equalize == "clahe" and dm.pipeline.augment is None
    assert dm.dataset.size == (16, 16)
    args = ["--config", str(config), "--data.split.val_fraction", "0.5", "--data.seed", "4",
            "--data.colour", "grayscale", "--data.num_workers", "0"]  # fmt: skip
    dm = instantiate(parser.parse_args(args)).data
    assert dm.split_options.val_fraction == 0.5 and dm.split_options.seed == 4
    assert dm.pipeline.colour == "grayscale" and dm.pipeline_options.equalize == "clahe"
