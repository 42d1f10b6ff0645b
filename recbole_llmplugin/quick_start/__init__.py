"""Entry points: the command line, ``run_recbole_llm`` / ``load_data_and_model``, one RecBole run, the CF backbone
step and the side-by-side comparison."""
