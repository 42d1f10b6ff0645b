"""Popularity metrics (AveragePopularity, TailPercentage) of plugin models count items in the run's whole training
data, as RecBole's models do -- not in a stage's training examples, and also when every stage is reused."""

from conftest import TINY_DATASET
from recbole_llmplugin.utils.compat import recbole_warnings_quiet

from recbole_llmplugin.quick_start.quick_start import build_config, get_trainer_class, prepare_data

POPULARITY = {"metrics": ["Hit", "AveragePopularity", "TailPercentage"], "topk": [5], "valid_metric": "Hit@5"}


def _fit_and_counts(model_name, props):
    config, model_class = build_config(model_name, TINY_DATASET, config_dict=props)
    _, train_data, valid_data, test_data = prepare_data(config)
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = get_trainer_class(config, model_class)(config, model)
    with recbole_warnings_quiet():  # RecBole's GradScaler (docs/compat.md)
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return trainer.eval_collector.data_struct.get("data.count_items"), train_data.dataset.item_counter, result


def test_popularity_counts_come_from_the_whole_training_data(workdir, allmrec_config):
    props = {**allmrec_config, **POPULARITY}
    recbole_counts, whole, _ = _fit_and_counts("SASRec", {**props, "hidden_size": 16, "inner_size": 32, "n_layers": 1})
    assert recbole_counts == whole
    trained, whole, first = _fit_and_counts("ALLMRec", props)  # trains stage 1 and 2 on users' last positions
    assert trained == whole and sum(whole.values()) > 2 * len(whole)
    reused, _, second = _fit_and_counts("ALLMRec", props)  # every stage reused: RecBole's fit never runs
    assert reused == whole
    assert second["averagepopularity@5"] == first["averagepopularity@5"] > 0
    untrained, _, _ = _fit_and_counts("LLMOnly", props)  # nothing to train
    assert untrained == whole
