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

from .data.dataset import (consecutive_offsets, denormalize, ImageDataset,
                           TeacherLogitsDataset, unrolled_frames, VideoPairDataset)
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
        unrolled = d.unroll > 1   # recipes allow it for model.kind ssp only
        offsets = consecutive_offsets(d.unroll) if unrolled else kind.offsets
        return VideoPairDataset(d.root, "train", size, crop=crop, square_crop=d.square_crop,
                                augment=d.augment, offsets=offsets, with_homography=gt_h,
                                with_flow=gt_flow, chain=unrolled)
    if crop is not None:
        raise RecipeError("recipe data: image models train on whole frames or square crops "
                          "(data.square_crop: true), not data.crop; remove data.crop")
    return ImageDataset(d.root, "train", size, augment=d.augment, square_crop=d.square_crop)


class BatchHomography:
    """Give a batch its previous -> current homographies per ``data.homography``."""

    def __init__(self, data: DataRecipe) -> None:
        """Prepare the source; a registrator is built once for "registrator"."""
        self.source = data.homography
        self.registrator = None
        if self.source == "registrator":
            self.registrator = create_registrator(RegistrationConfig(**data.registration))

    def __call__(self, batch: dict) -> torch.Tensor:
        """Return the batch's (B, 3, 3) ``prev_image`` -> ``image`` homographies (float32)."""
        if self.source == "dataset":
            return self._stored(batch, "homography")
        return self._pairs(batch["prev_image"], batch["image"])

    def chain(self, batch: dict) -> torch.Tensor:
        """Return an unrolled batch's (B, T, 3, 3) homographies, frame to frame, oldest first.

        The frames are ``prev_images`` (T previous frames, newest first) and ``image``.
        """
        if self.source == "dataset":
            return self._stored(batch, "chain_homographies")
        frames = unrolled_frames(batch)
        return torch.stack([self._pairs(frames[:, t], frames[:, t + 1])
                            for t in range(frames.shape[1] - 1)], dim=1)

    @staticmethod
    def _stored(batch: dict, key: str) -> torch.Tensor:
        if key not in batch:
            raise KeyError(f"data.homography 'dataset' but the batch has no {key}")
        return batch[key].float()

    def _pairs(self, prev: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Return the (B, 3, 3) homographies ``prev`` -> ``image`` of a batch of frames."""
        if self.source == "identity":
            return torch.eye(3, device=image.device).expand(image.shape[0], 3, 3).contiguous()
        # Registration failures return the identity (Ref's behaviour, SSP_SPEC §3.1 step 5).
        hs = [self.registrator.register(p, c).homography
              for p, c in zip(denormalize(prev), denormalize(image))]
        return torch.from_numpy(np.stack(hs).astype(np.float32)).to(image.device)
