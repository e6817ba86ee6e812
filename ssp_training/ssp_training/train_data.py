"""The training data of a recipe: which dataset class, which extras, which homographies.

The datasets themselves are ``ssp_training.data.dataset``'s; this module only picks and
configures them from a recipe and the model kind, and supplies batch homographies when they
are not read from the dataset (``data.homography: registrator | identity``).
"""

from __future__ import annotations

import numpy as np
from ssp_perception.registration import create_registrator, RegistrationConfig
import torch
from torch.utils.data import Dataset

from .data.dataset import denormalize, ImageDataset, TeacherLogitsDataset, VideoPairDataset
from .model_kinds import ModelKind
from .recipes import DataRecipe, Recipe, RecipeError


def build_train_dataset(recipe: Recipe, kind: ModelKind) -> Dataset:
    """Return the training dataset for ``recipe`` and model ``kind``."""
    d, loss = recipe.data, recipe.loss
    size = (d.size[0], d.size[1])
    crop = (d.crop[0], d.crop[1]) if d.crop else None
    gt_h = kind.needs_homography and d.homography == "dataset"
    gt_flow = loss.uses_flow and loss.flow == "gt"
    if loss.uses_teacher:
        if len(kind.offsets) > 1:
            raise RecipeError(f"recipe loss: KD pairs hold one previous frame; model kind "
                              f"{kind.name!r} needs {len(kind.offsets)}")
        return TeacherLogitsDataset(d.root, "train", d.teacher_logits, size, crop=crop,
                                    square_crop=d.square_crop, augment=d.augment,
                                    skip=d.kd_frame_step, with_homography=gt_h,
                                    with_flow=gt_flow, upsample=d.teacher_logits_upsample)
    if kind.video:
        return VideoPairDataset(d.root, "train", size, crop=crop, square_crop=d.square_crop,
                                augment=d.augment, offsets=kind.offsets,
                                with_homography=gt_h, with_flow=gt_flow)
    if crop is not None:
        raise RecipeError("recipe data: image models train on whole frames or square crops "
                          "(data.square_crop: true), not data.crop; remove data.crop")
    return ImageDataset(d.root, "train", size, augment=d.augment, square_crop=d.square_crop)


class BatchHomography:
    """Give a batch its (B, 3, 3) previous -> current homographies per ``data.homography``."""

    def __init__(self, data: DataRecipe) -> None:
        """Prepare the source; a registrator is built once for "registrator"."""
        self.source = data.homography
        self.registrator = None
        if self.source == "registrator":
            self.registrator = create_registrator(RegistrationConfig(**data.registration))

    def __call__(self, batch: dict) -> torch.Tensor:
        """Return the batch's homographies on the batch's device (float32)."""
        image = batch["image"]
        b = image.shape[0]
        if self.source == "dataset":
            if "homography" not in batch:
                raise KeyError("data.homography 'dataset' but the batch has no homography")
            return batch["homography"].float()
        if self.source == "identity":
            return torch.eye(3, device=image.device).expand(b, 3, 3).contiguous()
        prev, cur = denormalize(batch["prev_image"]), denormalize(image)
        # Registration failures return the identity (Ref's behaviour, SSP_SPEC §3.1 step 5).
        hs = [self.registrator.register(p, c).homography for p, c in zip(prev, cur)]
        return torch.from_numpy(np.stack(hs).astype(np.float32)).to(image.device)
