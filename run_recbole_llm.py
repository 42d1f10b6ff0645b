"""Run a plugin model or any RecBole model with RecBole's flags.

python run_recbole_llm.py --model=LLMOnly --dataset=ml-100k --config_files="a.yaml b.yaml" --key=value
"""

import sys

from recbole_llmplugin.quick_start.cli import main

if __name__ == "__main__":
    sys.exit(main())
