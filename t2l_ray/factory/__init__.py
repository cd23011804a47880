"""The adapter factory: a JSONL file of descriptions in, one adapter folder per line out.

- `plan`: the input read and every line checked on the driver, ids given, what is already in `out` found;
- `stages`: the encoder and generation stages, on Ray Data actor pools or in this process for small jobs;
- `writer`: the host side of generation (hash and write adapters from a batch buffer, on threads);
- `summary`: counts and the wall and steady rates; `run`: `check_job` (every check and the plan, on the
  driver, before any work), `run_job`, and `run_factory`, which is both.

The base model's weights are never loaded: shapes come from the checkpoint. Reruns are cheap and safe: a
complete folder made from the same description and checkpoint is skipped, a half-written one (no
`adapter_config.json`) is written again.
"""

from t2l_ray.factory.config import FactoryConfig
from t2l_ray.factory.plan import Plan, Request, input_files, parse_line, plan_run
from t2l_ray.factory.run import FactoryJob, check_job, run_factory, run_job, runs_in_process
from t2l_ray.factory.summary import FactorySummary, steady_rate

__all__ = ["FactoryConfig", "FactoryJob", "FactorySummary", "Plan", "Request", "check_job", "input_files", "parse_line",
           "plan_run", "run_factory", "run_job", "runs_in_process", "steady_rate"]
