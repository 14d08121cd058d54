"""predictions.png names the classes in its legend when their names are known (classes.txt)."""
import numpy as np

from simclr_tf.evaluation import segmentation_plots
from tasks.list_inputs import class_names_beside


def test_legend_labels_name_the_classes():
    assert segmentation_plots.legend_labels(3) == ["0 background (untinted)", "1", "2", "255 (ignore)"]
    assert segmentation_plots.legend_labels(3, ["sky", "road", "car"]) == [
        "0 sky (untinted)", "1 road", "2 car", "255 (ignore)"]
    # default names ('0', '1', ...) add nothing to the index
    assert segmentation_plots.legend_labels(2, ["0", "1"]) == ["0 background (untinted)", "1", "255 (ignore)"]
    many = segmentation_plots.legend_labels(25, [f"c{i}" for i in range(25)])
    assert many[1] == "1 c1" and many[-2] == "... 5 more" and len(many) == 22


def test_the_figure_legend_shows_the_names(tmp_path, monkeypatch):
    seen = {}

    def capture(figure, path, **kwargs):
        seen["texts"] = [text.get_text() for text in figure.legends[0].get_texts()]
    monkeypatch.setattr(segmentation_plots, "save_figure_atomic", capture)
    image = np.zeros((8, 8, 3), np.uint8)
    label_map = np.zeros((8, 8), np.uint8)
    segmentation_plots.plot_segmentation_predictions([image], [label_map], [label_map], str(tmp_path / "p.png"), 3,
                                                     class_names=["background", "circle", "square"])
    assert seen["texts"] == ["0 background (untinted)", "1 circle", "2 square", "255 (ignore)"]


def test_segmentation_class_names_may_leave_the_background_implied(tmp_path):
    (tmp_path / "classes.txt").write_text("circle\nsquare\n", encoding="utf-8")
    list_path = str(tmp_path / "train_seg.txt")
    assert class_names_beside(list_path, 3, background_implied=True) == ["background", "circle", "square"]
    assert class_names_beside(list_path, 3) == ["0", "1", "2"]  # classification: the count must match
    assert class_names_beside(list_path, 2) == ["circle", "square"]
