"""Matplotlib figures with Chinese labels: learning curves, samples, confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import font_manager

# Families tried in order; the first one matplotlib can load is used.
CJK_FAMILIES = [
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Source Han Sans SC",
    "PingFang SC",
    "Heiti SC",
    "Microsoft YaHei",
    "SimHei",
]
# Font files that may have been installed after matplotlib built its cache
# (for example by apt-get in a running Colab session).
_FONT_DIRS = ["/usr/share/fonts", "/usr/local/share/fonts", str(Path.home() / ".fonts")]
_FONT_FILE_HINTS = ("wqy", "notosanscjk", "notosanssc", "sourcehansans", "simhei", "msyh")

INSTALL_HINT = (
    "未找到中文字体，图中文字改用英文标注。安装方法："
    "Debian/Ubuntu/Colab 运行 `apt-get install -y fonts-wqy-microhei`，"
    "macOS 和 Windows 自带中文字体；装好后重启内核。"
)

_cjk_family: str | None = None
_font_checked = False


def _find_cjk_family() -> str | None:
    available = {font.name for font in font_manager.fontManager.ttflist}
    for family in CJK_FAMILIES:
        if family in available:
            return family
    return None


def _register_font_files() -> None:
    for folder in _FONT_DIRS:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            name = path.name.lower().replace("-", "").replace("_", "")
            if path.suffix.lower() in (".ttf", ".ttc", ".otf") and name.startswith(_FONT_FILE_HINTS):
                try:
                    font_manager.fontManager.addfont(str(path))
                except (OSError, RuntimeError):
                    continue


def use_cjk_font() -> str | None:
    """Make matplotlib draw Chinese text; return the font family used, or None.

    Without a CJK font, prints once how to install one, and the plotting
    functions here fall back to English labels instead of drawing empty boxes.
    """
    global _cjk_family, _font_checked
    if _font_checked:
        return _cjk_family
    family = _find_cjk_family()
    if family is None:
        _register_font_files()
        family = _find_cjk_family()
    _font_checked = True
    _cjk_family = family
    if family is None:
        print(INSTALL_HINT)
        return None
    plt.rcParams["font.sans-serif"] = [family, *plt.rcParams["font.sans-serif"]]
    plt.rcParams["font.family"] = "sans-serif"
    # The CJK fonts lack U+2212, matplotlib's minus sign on axes.
    plt.rcParams["axes.unicode_minus"] = False
    return family


def label(chinese: str, english: str) -> str:
    """Return ``chinese`` when a CJK font is in use, else ``english``."""
    return chinese if use_cjk_font() is not None else english


def _to_images(images) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2 and array.shape[1] == 28 * 28:
        array = array.reshape(-1, 28, 28)
    if array.ndim != 3:
        raise ValueError(
            f"expected images shaped [N, 28, 28], [N, 1, 28, 28] or [N, 784], got {array.shape}"
        )
    return array


def plot_history(histories, title: str | None = None):
    """Plot loss and accuracy per epoch for one ``History`` or a {name: History} mapping."""
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    figure, (loss_axis, acc_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, history in histories.items():
        prefix = f"{name} " if name else ""
        epochs = history.column("epoch")
        loss_axis.plot(epochs, history.column("train_loss"), "o-", label=prefix + label("训练", "train"))
        loss_axis.plot(epochs, history.column("test_loss"), "s--", label=prefix + label("测试", "test"))
        acc_axis.plot(epochs, [100 * a for a in history.column("train_acc")], "o-", label=prefix + label("训练", "train"))
        acc_axis.plot(epochs, [100 * a for a in history.column("test_acc")], "s--", label=prefix + label("测试", "test"))
    loss_axis.set(xlabel=label("轮次（epoch）", "epoch"), ylabel=label("交叉熵损失", "cross-entropy loss"))
    acc_axis.set(xlabel=label("轮次（epoch）", "epoch"), ylabel=label("准确率（%）", "accuracy (%)"))
    for axis in (loss_axis, acc_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def show_images(
    images,
    labels: Sequence[int] | torch.Tensor | None = None,
    predictions: Sequence[int] | torch.Tensor | None = None,
    ncols: int = 8,
    title: str | None = None,
):
    """Show a grid of digits; titles give the label and, if given, the prediction.

    Wrong predictions are titled in red.
    """
    array = _to_images(images)
    count = len(array)
    if count == 0:
        raise ValueError("no images to show")
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} images; pass one per image")
    nrows = -(-count // ncols)
    figure, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(array[index], cmap="gray_r")
        parts, color = [], "black"
        if labels is not None:
            parts.append(label(f"标签 {int(labels[index])}", f"y:{int(labels[index])}"))
        if predictions is not None:
            parts.append(label(f"预测 {int(predictions[index])}", f"p:{int(predictions[index])}"))
            if labels is not None and int(predictions[index]) != int(labels[index]):
                color = "red"
        axis.set_title(" ".join(parts), fontsize=9, color=color)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(predictions, targets, num_classes: int = 10) -> np.ndarray:
    """Return counts[true, predicted] as an integer array."""
    predictions = torch.as_tensor(predictions).cpu()
    targets = torch.as_tensor(targets).cpu()
    if predictions.is_floating_point() or targets.is_floating_point():
        raise ValueError("predictions and targets must be integer class indices, not floats")
    predictions, targets = predictions.long(), targets.long()
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape")
    for name, values in (("predictions", predictions), ("targets", targets)):
        if len(values) and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must be class indices in [0, {num_classes - 1}], "
                f"got values from {values.min().item()} to {values.max().item()}"
            )
    index = targets * num_classes + predictions
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def plot_confusion_matrix(predictions, targets, num_classes: int = 10, title: str | None = None):
    """Plot the confusion matrix with counts; the diagonal contains correct predictions."""
    counts = confusion_matrix(predictions, targets, num_classes)
    figure, axis = plt.subplots(figsize=(6.2, 5.4))
    # Log colour scale, so that the few errors stay visible beside the large diagonal.
    image = axis.imshow(np.log1p(counts), cmap="Blues")
    for true in range(num_classes):
        for predicted in range(num_classes):
            value = counts[true, predicted]
            if value:
                dark = np.log1p(value) > 0.6 * np.log1p(counts.max())
                axis.text(predicted, true, str(value), ha="center", va="center", fontsize=7,
                          color="white" if dark else "black")
    axis.set(
        xticks=range(num_classes),
        yticks=range(num_classes),
        xlabel=label("预测类别", "predicted"),
        ylabel=label("真实类别", "true"),
    )
    axis.set_title(title or label("混淆矩阵", "confusion matrix"))
    figure.colorbar(image, ax=axis, label=label("log(1 + 样本数)", "log(1 + count)"))
    figure.tight_layout()
    return figure


def plot_misclassified(images, predictions, targets, count: int = 16, ncols: int = 8):
    """Show the first ``count`` misclassified digits with their true and predicted labels."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    predictions = torch.as_tensor(predictions).cpu()
    targets = torch.as_tensor(targets).cpu()
    wrong = torch.nonzero(predictions != targets).flatten()[:count]
    if len(wrong) == 0:
        raise ValueError("no misclassified examples: every prediction matches its target")
    array = _to_images(images)
    return show_images(
        array[wrong.numpy()],
        targets[wrong],
        predictions[wrong],
        ncols=ncols,
        title=label("分错的样本", "misclassified digits"),
    )
