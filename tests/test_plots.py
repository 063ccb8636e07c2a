import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from helpers import plots, training


@pytest.fixture
def no_cjk_font(monkeypatch):
    monkeypatch.setattr(plots, "_find_cjk_family", lambda: None)
    monkeypatch.setattr(plots, "_register_font_files", lambda: None)
    monkeypatch.setattr(plots, "_font_checked", False)
    monkeypatch.setattr(plots, "_cjk_family", None)


def test_confusion_matrix_counts():
    counts = plots.confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], num_classes=3)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_confusion_matrix_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        plots.confusion_matrix([0, 1], [0, 1, 2])


def test_missing_font_hint_printed_once(no_cjk_font, capsys):
    assert plots.use_cjk_font() is None
    assert plots.use_cjk_font() is None
    printed = capsys.readouterr().out
    assert printed.count("fonts-wqy-microhei") == 1


def test_missing_font_falls_back_to_english(no_cjk_font, capsys):
    assert plots.label("测试", "test") == "test"


def test_cjk_font_installed():
    # The project's setup installs fonts-wqy-microhei; without it the book's
    # figures would fall back to English labels.
    assert plots.use_cjk_font() is not None


def test_show_images_rejects_bad_shape():
    with pytest.raises(ValueError, match="28, 28"):
        plots.show_images(np.zeros((2, 5, 5, 5)))


def test_plot_misclassified_needs_errors():
    with pytest.raises(ValueError, match="no misclassified"):
        plots.plot_misclassified(torch.zeros(3, 28, 28), [1, 2, 3], [1, 2, 3])


def test_figures_draw():
    history = training.History(
        [training.EpochRecord(e, 0.5 / e, 0.9, 0.4 / e, 0.95, 1.0, 10.0) for e in (1, 2)]
    )
    figures = [
        plots.plot_history(history),
        plots.plot_confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=2),
        plots.show_images(torch.zeros(3, 1, 28, 28), [1, 2, 3], [1, 0, 3]),
    ]
    for figure in figures:
        assert len(figure.axes) >= 1
        figure.canvas.draw()
        plt.close(figure)


@pytest.mark.parametrize("predictions", [[10, 0], [-1, 0]])
def test_confusion_matrix_rejects_out_of_range(predictions):
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        plots.confusion_matrix(predictions, [0, 0])


def test_confusion_matrix_rejects_floats():
    with pytest.raises(ValueError, match="integer"):
        plots.confusion_matrix([0.7, 1.2], [0, 1])


def test_show_images_rejects_label_count():
    with pytest.raises(ValueError, match="one per image"):
        plots.show_images(torch.zeros(3, 28, 28), labels=[1])
