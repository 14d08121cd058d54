"""`--task=predict`: a fine-tuned model (classification or segmentation) on an image list."""
from . import artifacts, classifier_results, segmenter_results
from .flag_use import TaskFlags

FLAGS_READ = TaskFlags("predict", results=(), also_reads=("write_list", "test_list", "decoding", "batch", "finetune_folder", "output_folder"))
_PREDICT = {"classification": classifier_results.predict_saved, "segmentation": segmenter_results.predict_saved}


def run(flag_values):
    """Reads finetune.json to learn which task made model.keras, and predicts with it that way."""
    info = artifacts.read_finetune_info(flag_values.finetune_save_path)
    _PREDICT[info["task"]](flag_values, info)
