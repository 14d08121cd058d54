"""`--task=evaluate`: a fine-tuned model (classification or segmentation) on a labelled list."""
import importlib

from tasks import common


def run(flag_values):
    """Reads finetune.json to learn which task made model.keras, and lets that task evaluate it."""
    info = common.read_finetune_info(flag_values.finetune_save_path)
    importlib.import_module(f"tasks.{info['task']}").evaluate_saved(flag_values, info)
