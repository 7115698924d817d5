"""(transitional) The language model task; the loop moves to charrnn.trainer."""
from charrnn.train import TrainSummary, resume_config, train  # noqa: F401
