"""(transitional, removed once every caller imports charrnn.lm / charrnn.trainer / charrnn.config)"""
from charrnn.config import DEFAULT_CORPUS, TrainConfig  # noqa: F401
from charrnn.device import resolve_precision  # noqa: F401
from charrnn.lm import default_corpus_path, resume_config, train  # noqa: F401
from charrnn.trainer import TrainSummary, learning_rate  # noqa: F401
