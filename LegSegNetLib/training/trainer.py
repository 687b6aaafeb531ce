"""nnU-Net v2's 2D training recipe for LegSegNet-style models, writing an nnU-Net v2 model folder.

Recipe (nnUNetTrainer's defaults): Dice + cross-entropy on every deep-supervision output (weights 1/2^i,
lowest resolution 0), SGD with Nesterov momentum 0.99, weight decay 3e-5, learning rate 1e-2 decayed by
(1 - epoch / epochs)^0.9, gradient norm clipped at 12, 250 iterations per epoch, batches drawn at random,
nnU-Net's augmentation (see augment.py). Each epoch the validation slices are segmented whole and the
Dice of each tissue is logged; checkpoint_best.pth follows the exponential moving average of their mean.

The folder written (plans.json, dataset.json, legsegnet.json with the in-plane orientation, splits_final.json,
fold_N/checkpoint_{final,best,latest}.pth)
loads in this library's engine and in nnunetv2's nnUNetPredictor. checkpoint_latest.pth also holds the
optimizer state for --resume; the final and best checkpoints hold what inference needs, to stay small.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss
from tqdm import tqdm

from LegSegNetLib.device import resolve_device
from LegSegNetLib.reading.layout import RADIOLOGICAL
from LegSegNetLib.models.validate import MODEL_PROPERTIES_FILE
from LegSegNetLib.segmenting.engines.nnunet.checkpoint import load_checkpoint
from LegSegNetLib.segmenting.engines.nnunet.engine import ORIENTATION_KEY
from LegSegNetLib.segmenting.engines.nnunet.model import build_network, load_model_folder
from LegSegNetLib.training.augment import IMAGE, LABEL, training_transforms
from LegSegNetLib.training.data import (RawDataset, load_raw_dataset, make_splits, place_in_patch, preprocess, random_offset)
from LegSegNetLib.training.options import TrainingOptions
from LegSegNetLib.training.plans import CONFIGURATION, foreground_intensity_properties, legsegnet_plans, write_json

log = logging.getLogger(__name__)

TRAINER_NAME = "nnUNetTrainer"  # the recipe is nnUNetTrainer's, and nnUNetPredictor builds the network through it
MIRROR_AXES = (0, 1)
MOMENTUM, WEIGHT_DECAY, POLY_EXPONENT, GRAD_CLIP = 0.99, 3e-5, 0.9, 12.0
EMA_KEEP = 0.9  # nnU-Net's moving average of the validation Dice: 0.9 * old + 0.1 * new

EpochCallback = Callable[[int, dict], Optional[bool]]
"""Called after each epoch's checkpoint as callback(epochs_done, metrics); returning False stops training."""


class TrainingError(ValueError):
    """Training cannot start as asked (output exists, incompatible --init model, ...)."""


def train(dataset_dir, out_dir, options: TrainingOptions = TrainingOptions(),
          epoch_callback: Optional[EpochCallback] = None) -> dict:
    """Train fold `options.fold` on an nnU-Net raw dataset; returns the last epoch's metrics."""
    return _Trainer(load_raw_dataset(dataset_dir), Path(out_dir), options).run(epoch_callback)


class _Trainer:
    def __init__(self, dataset: RawDataset, out_dir: Path, options: TrainingOptions):
        self.dataset, self.out_dir, self.options = dataset, out_dir, options
        self.fold_dir = out_dir / f"fold_{options.fold}"
        self.device = resolve_device(options.device)
        self.plans, init_weights = self._plans_and_initial_weights()
        self.configuration = self.plans["configurations"][CONFIGURATION]
        self.patch_size = tuple(self.configuration["patch_size"])
        self.batch_size = options.batch_size or int(self.configuration["batch_size"])
        torch.manual_seed(options.seed)  # the initial weights follow from the seed too
        self.network = build_network(self.plans, CONFIGURATION, dataset.dataset_json)
        if init_weights is not None:
            self.network.load_state_dict(init_weights)
        self.network.to(self.device)
        self.optimizer = torch.optim.SGD(self.network.parameters(), lr=options.learning_rate, momentum=MOMENTUM,
                                         nesterov=True, weight_decay=WEIGHT_DECAY)
        self.scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        self.dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                  smooth_nr=1e-5, smooth_dr=1e-5)
        self.loss = self._deep_supervision_loss() if options.deep_supervision else self.dice_ce
        self.network.decoder.deep_supervision = options.deep_supervision
        self.num_classes = len(dataset.dataset_json["labels"])
        self.train_cases, self.val_cases = self._split()
        self.samples = {case: preprocess(image, label, self.configuration, self.plans)
                        for case, image, label in zip(dataset.cases, dataset.images, dataset.labels)}
        self.transforms = training_transforms(MIRROR_AXES)
        self.logging = {key: [] for key in ("mean_fg_dice", "ema_fg_dice", "dice_per_class_or_region",
                                            "train_losses", "val_losses", "lrs",
                                            "epoch_start_timestamps", "epoch_end_timestamps")}
        self.best_ema, self.start_epoch = None, 0
        if options.resume:
            self._load_training_state()

    # --- setup ------------------------------------------------------------------------------------------------
    def _plans_and_initial_weights(self) -> tuple:
        options, plans_path = self.options, self.out_dir / "plans.json"
        if options.resume:
            if not (self.fold_dir / "checkpoint_latest.pth").is_file():
                raise TrainingError(f"nothing to resume: {self.fold_dir / 'checkpoint_latest.pth'} does not exist")
            return json.loads(plans_path.read_text(encoding="utf-8")), None
        if self.fold_dir.is_dir() and any(self.fold_dir.glob("checkpoint_*.pth")):
            raise TrainingError(f"{self.fold_dir} already holds checkpoints: use --resume to continue that "
                                "training, or give another --out folder")
        if options.init is not None:
            if options.width is not None:
                raise TrainingError("--width cannot change the architecture of an --init model; leave it out")
            return self._init_model_plans()
        plans = legsegnet_plans(
            width=1.0 if options.width is None else options.width,
            normalization="CTNormalization" if self._channel_name() == "CT" else "ZScoreNormalization",
            intensity_properties=foreground_intensity_properties(self.dataset.images, self.dataset.labels),
            dataset_name=self.dataset.folder.name,
        )
        return plans, None

    def _channel_name(self) -> str:
        return next(iter(self.dataset.dataset_json["channel_names"].values()))

    def _init_model_plans(self) -> tuple:
        model = load_model_folder(self.options.init, folds=None)
        if model.dataset_json["labels"] != self.dataset.dataset_json["labels"]:
            raise TrainingError(
                f"--init model labels {model.dataset_json['labels']} differ from the dataset's "
                f"{self.dataset.dataset_json['labels']}: fine-tuning needs the same labels"
            )
        log.info("fine-tuning from %s (%s, fold %s)", model.folder, model.checkpoint_name, model.folds[0])
        plans = dict(model.plans, configurations={CONFIGURATION: model.configuration})
        return plans, model.networks[0].state_dict()

    def _deep_supervision_loss(self) -> torch.nn.Module:
        levels = len(self.configuration["architecture"]["arch_kwargs"]["strides"]) - 1
        weights = [0.5 ** level for level in range(levels)]
        weights[-1] = 0.0  # nnU-Net ignores the lowest resolution output
        return DeepSupervisionLoss(self.dice_ce, weights=[weight / sum(weights) for weight in weights])

    def _split(self) -> tuple:
        splits = make_splits(self.dataset.cases, self.dataset.groups)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.out_dir / "splits_final.json", splits)
        if self.options.fold == "all":
            return list(self.dataset.cases), list(self.dataset.cases)
        fold = int(self.options.fold)
        if not 0 <= fold < len(splits):
            raise TrainingError(f"fold must be 0-{len(splits) - 1} or 'all', got {self.options.fold}")
        train_cases, val_cases = splits[fold]["train"], splits[fold]["val"]
        if not train_cases or not val_cases:
            raise TrainingError(f"fold {fold} leaves no training or no validation slices: export more slices "
                                "or use --fold all")
        step = -(-len(val_cases) // self.options.max_validation_slices)  # evenly spread over the sources
        return train_cases, val_cases[::step]

    # --- training ---------------------------------------------------------------------------------------------
    def run(self, epoch_callback: Optional[EpochCallback]) -> dict:
        write_json(self.out_dir / "plans.json", self.plans)
        write_json(self.out_dir / "dataset.json", self.dataset.dataset_json)
        # export-pairs writes slices in radiological display; the engine must present them the same way.
        write_json(self.out_dir / MODEL_PROPERTIES_FILE, {ORIENTATION_KEY: RADIOLOGICAL})
        self.fold_dir.mkdir(parents=True, exist_ok=True)
        log.info("training %d slices, validating on %d, %d epochs x %d iterations of batch %d on %s",
                 len(self.train_cases), len(self.val_cases), self.options.epochs,
                 self.options.iterations_per_epoch, self.batch_size, self.device)
        metrics = {}
        for epoch in range(self.start_epoch, self.options.epochs):
            metrics = self._run_epoch(epoch)
            self._save("checkpoint_latest.pth", epoch + 1, with_training_state=True)
            if self.best_ema is None or metrics["ema_fg_dice"] > self.best_ema:
                self.best_ema = metrics["ema_fg_dice"]
                self._save("checkpoint_best.pth", epoch + 1)
            if epoch_callback is not None and epoch_callback(epoch + 1, metrics) is False:
                log.info("training stopped after epoch %d; continue it with --resume", epoch + 1)
                return metrics
        self._save("checkpoint_final.pth", self.options.epochs)
        return metrics

    def _run_epoch(self, epoch: int) -> dict:
        options = self.options
        self.logging["epoch_start_timestamps"].append(time.time())
        learning_rate = options.learning_rate * (1 - epoch / options.epochs) ** POLY_EXPONENT
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        # Seeded per epoch, so a resumed training draws the same batches as an uninterrupted one.
        rng = np.random.default_rng([options.seed, epoch])
        torch.manual_seed(options.seed * 100_003 + epoch)
        self.transforms.set_random_state(seed=int(rng.integers(2 ** 31)))
        self.network.train()
        losses = []
        bar = tqdm(range(options.iterations_per_epoch), desc=f"epoch {epoch + 1}/{options.epochs}",
                   unit="batch", leave=False, mininterval=1.0,
                   disable=not sys.stderr.isatty())  # a bar on a terminal; logs get the epoch lines only
        for _ in bar:
            losses.append(self._train_step(*self._batch(rng)))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        dice, val_loss = self._validate()
        mean_dice = float(np.nanmean(dice)) if not np.all(np.isnan(dice)) else 0.0
        previous = self.logging["ema_fg_dice"]
        ema = mean_dice if not previous else EMA_KEEP * float(previous[-1]) + (1 - EMA_KEEP) * mean_dice
        self._log_epoch(learning_rate, float(np.mean(losses)), val_loss, dice, mean_dice, ema)
        return {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                "dice": self._dice_by_tissue(dice), "mean_fg_dice": mean_dice, "ema_fg_dice": ema,
                "learning_rate": learning_rate}

    def _batch(self, rng: np.random.Generator) -> tuple:
        images, labels = [], []
        for index in rng.integers(len(self.train_cases), size=self.batch_size):
            sample = self.samples[self.train_cases[index]]
            image, label = place_in_patch(sample, self.patch_size, random_offset(sample.image.shape, self.patch_size, rng))
            augmented = self.transforms({IMAGE: torch.from_numpy(image)[None],
                                         LABEL: torch.from_numpy(label.astype(np.float32))[None]})
            images.append(torch.as_tensor(augmented[IMAGE], dtype=torch.float32))
            labels.append(torch.as_tensor(augmented[LABEL], dtype=torch.float32))
        return torch.stack(images).to(self.device), torch.stack(labels).to(self.device)

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.scaler is not None):
            loss = self.loss(self.network(images), labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRAD_CLIP)
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def _validate(self) -> tuple:
        """Dice of each foreground label over all validation slices (centred in the patch, as at inference)."""
        self.network.eval()
        self.network.decoder.deep_supervision = False
        counts = np.zeros((3, self.num_classes - 1))  # true positives, false positives, false negatives
        losses = []
        for start in range(0, len(self.val_cases), self.batch_size):
            pairs = [place_in_patch(self.samples[case], self.patch_size)
                     for case in self.val_cases[start:start + self.batch_size]]
            images = torch.from_numpy(np.stack([image for image, _ in pairs]))[:, None].to(self.device)
            labels = torch.from_numpy(np.stack([label for _, label in pairs]).astype(np.int64))[:, None].to(self.device)
            with torch.autocast(self.device.type, enabled=self.scaler is not None):
                logits = self.network(images)
            losses.append(float(self.dice_ce(logits.float(), labels)))
            predicted = logits.argmax(1, keepdim=True)
            for value in range(1, self.num_classes):
                counts[0, value - 1] += int(((predicted == value) & (labels == value)).sum())
                counts[1, value - 1] += int(((predicted == value) & (labels != value)).sum())
                counts[2, value - 1] += int(((predicted != value) & (labels == value)).sum())
        self.network.decoder.deep_supervision = self.options.deep_supervision
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2 * counts[0] / (2 * counts[0] + counts[1] + counts[2])
        return dice, float(np.mean(losses))

    def _dice_by_tissue(self, dice: np.ndarray) -> dict:
        names = {value: name for name, value in self.dataset.dataset_json["labels"].items()}
        return {names[value]: float(dice[value - 1]) for value in range(1, self.num_classes)}

    def _log_epoch(self, learning_rate, train_loss, val_loss, dice, mean_dice, ema) -> None:
        entries = self.logging
        entries["lrs"].append(learning_rate)
        entries["train_losses"].append(np.float32(train_loss))
        entries["val_losses"].append(np.float32(val_loss))
        entries["dice_per_class_or_region"].append([np.float64(value) for value in dice])
        entries["mean_fg_dice"].append(np.float64(mean_dice))
        entries["ema_fg_dice"].append(np.float64(ema))
        entries["epoch_end_timestamps"].append(time.time())
        seconds = entries["epoch_end_timestamps"][-1] - entries["epoch_start_timestamps"][-1]
        per_tissue = "  ".join(f"{name} {value:.3f}" for name, value in self._dice_by_tissue(dice).items())
        log.info("epoch %d/%d  loss %.4f  val loss %.4f  Dice %s  (mean %.3f, EMA %.3f)  lr %.5f  %.1f s",
                 len(entries["lrs"]), self.options.epochs, train_loss, val_loss, per_tissue, mean_dice, ema,
                 learning_rate, seconds)

    # --- checkpoints ------------------------------------------------------------------------------------------
    def _save(self, name: str, epochs_done: int, with_training_state: bool = False) -> None:
        checkpoint = {
            "network_weights": {key: value.detach().cpu() for key, value in self.network.state_dict().items()},
            "logging": self.logging,
            "_best_ema": None if self.best_ema is None else np.float64(self.best_ema),
            "current_epoch": epochs_done,
            "init_args": {"plans": self.plans, "configuration": CONFIGURATION, "fold": self.options.fold,
                          "dataset_json": self.dataset.dataset_json, "device": torch.device(self.device.type)},
            "trainer_name": TRAINER_NAME,
            "inference_allowed_mirroring_axes": MIRROR_AXES,
        }
        if with_training_state:
            checkpoint["optimizer_state"] = self.optimizer.state_dict()
            checkpoint["grad_scaler_state"] = self.scaler.state_dict() if self.scaler is not None else None
        temporary = self.fold_dir / (name + ".partial")
        torch.save(checkpoint, temporary)
        temporary.replace(self.fold_dir / name)  # a crash mid-write never leaves a truncated checkpoint

    def _load_training_state(self) -> None:
        checkpoint = load_checkpoint(self.fold_dir / "checkpoint_latest.pth")
        self.network.load_state_dict(checkpoint["network_weights"])
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.scaler is not None and checkpoint.get("grad_scaler_state"):
            self.scaler.load_state_dict(checkpoint["grad_scaler_state"])
        self.logging = checkpoint["logging"]
        self.best_ema = None if checkpoint["_best_ema"] is None else float(checkpoint["_best_ema"])
        self.start_epoch = int(checkpoint["current_epoch"])
        if self.start_epoch >= self.options.epochs:
            raise TrainingError(f"the checkpoint has already trained {self.start_epoch} epochs; ask for more "
                                "--epochs to continue, or fine-tune it with --init")
        log.info("resuming after epoch %d", self.start_epoch)
