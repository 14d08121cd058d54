"""`--task=predict`: a fine-tuned model (classification or segmentation) on an image list."""
import importlib

from tasks import common


def run(flag_values):
    """Reads finetune.json to learn which task made model.keras, and lets that task predict with it."""
    info = common.read_finetune_info(flag_values.finetune_save_path)
    importlib.import_module(f"tasks.{info['task']}").predict_saved(flag_values, info)
