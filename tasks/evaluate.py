"""`--task=evaluate`: a fine-tuned model (classification or segmentation) on a labelled list."""
from . import artifacts, classifier_results, segmenter_results
from .flag_use import TaskFlags

FLAGS_READ = TaskFlags("evaluate", results=(), also_reads=("val_list", "write_list", "decoding", "cifar10", "classes",
                                                           "batch", "finetune_folder"))
_EVALUATE = {"classification": classifier_results.evaluate_saved, "segmentation": segmenter_results.evaluate_saved}


def run(flag_values):
    """Reads finetune.json to learn which task made model.keras, and evaluates it that way."""
    info = artifacts.read_finetune_info(flag_values.finetune_save_path)
    artifacts.check_num_classes_flag(flag_values, info)
    _EVALUATE[info["task"]](flag_values, info)
