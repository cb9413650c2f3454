"""MLflow's own limits on what a run holds, in one place.

The same values as ``mlflow.utils.validation`` (a test checks them against it), stated here
because the processes that train never import MLflow (seconds of imports per trial); every
module that cuts a key or value to size uses these.
"""

MAX_KEY = 250  # MAX_ENTITY_KEY_LENGTH: a param, metric or tag key
MAX_PARAM = 6000  # MAX_PARAM_VAL_LENGTH
MAX_TAG = 8000  # MAX_TAG_VAL_LENGTH: a run tag's value
MAX_EXPERIMENT_TAG = 20000  # MAX_EXPERIMENT_TAG_VAL_LENGTH
MAX_PARAMS_TAGS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH: log_batch
MAX_METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH: log_batch
