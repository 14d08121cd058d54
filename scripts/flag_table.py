"""Rewrites the flag table of README.md from config.py (python scripts/flag_table.py)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

import config  # noqa: E402

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def flag_table():
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for flag in flags.FLAGS.get_flags_for_module(config):
        default = "" if flag.default is None else str(flag.default)
        help_text = flag.help.replace("|", "\\|")
        rows.append(f"| `--{flag.name}` | `{default}` | {help_text} |" if default else
                    f"| `--{flag.name}` | | {help_text} |")
    return "\n".join(rows)


def replace_section(text, name, body):
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


if __name__ == "__main__":
    with open(README, encoding="utf-8") as f:
        text = f.read()
    text = replace_section(text, "flag-table", "### Flags\n\nBoolean flags also take the `--no` form "
                           "(`--noblur`). `python main.py --helpfull` prints the same list.\n\n" + flag_table())
    with open(README, "w", encoding="utf-8") as f:
        f.write(text)
