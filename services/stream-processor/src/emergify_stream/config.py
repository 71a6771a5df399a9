"""Settings of the stream processor (the Spark driver): speed layer, batch layer, admin app."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr

from emergify_contracts.settings import EmergifySettings


class Settings(EmergifySettings):
    """Everything the Spark driver needs; every field is an ``EMERGIFY_*`` variable."""

    spark_master: str = Field("local[2]", description="Spark master URL (local[2] embedded).")
    spark_driver_memory: str = Field(
        "2g",
        description="JVM heap of the Spark driver (in local mode, also the executors'): the "
        "batch layer caches the catalog there (1M songs need more than Spark's 1g default).",
    )
    spark_auth_secret: SecretStr | None = Field(
        None,
        description="Shared secret of a Spark standalone cluster (spark.authenticate): the "
        "master and workers must run with the same one. Unset: no authentication (local mode "
        "has no cluster to authenticate to).",
    )
    spark_executor_memory: str = Field(
        "512m",
        description="JVM heap of each executor on a Spark cluster (spark://...); must fit in a "
        "worker's --memory. Unused in local mode.",
    )
    spark_executor_python: str | None = Field(
        None,
        description="Python interpreter the executors run on a Spark cluster: a path that exists "
        "on every worker, with emergify_stream and its dependencies installed. Default: the "
        "driver's own interpreter (right when the workers share the driver's machine or image).",
    )
    spark_driver_host: str | None = Field(
        None,
        description="Address executors use to reach the driver (spark.driver.host and "
        "bindAddress); default: Spark's choice. Set it when the driver has several interfaces.",
    )
    spark_scheduler_mode: Literal["FAIR", "FIFO"] = Field(
        "FAIR",
        description="How Spark shares task slots between jobs: FAIR puts the streaming "
        "queries' jobs in the 'speed' pool, ahead of training runs in the 'batch' pool "
        "(docs/stream-processor.md); FIFO runs jobs in submission order.",
    )
    speed_pool_weight: int = Field(
        4, ge=1, description="FAIR: the speed pool's share of free slots against batch's 1."
    )
    speed_pool_min_share: int = Field(
        2,
        ge=0,
        description="FAIR: task slots the speed pool is offered first whenever its jobs wait "
        "(local[2] has 2; on a cluster, the cores a micro-batch should never wait for).",
    )
    spark_kafka_format: str = Field(
        "emergify_kafka",
        description="Streaming source format: 'emergify_kafka' (Python source) or 'kafka' "
        "(Spark's JVM connector, when its jar is on the classpath). Same options and columns.",
    )
    starting_offsets: str = Field(
        "earliest",
        description='Where a new checkpoint starts: earliest, latest or JSON {"topic": {"0": 23}}.',
    )
    trigger_interval_seconds: float = Field(
        0.2,
        gt=0,
        description="Micro-batch trigger: how often the source asks for the log end (an idle "
        "trigger is one short poll of a long-lived consumer); half of it is the average wait "
        "a new song adds to freshness.",
    )
    lag_cache_seconds: float = Field(
        2.0,
        ge=0,
        description="How long a measured speed-layer lag is reused by GET /admin/status (each "
        "measurement asks the broker for every partition's log end); 0 = measure every time.",
    )
    broker_watch_interval_seconds: float = Field(
        2.0,
        ge=0,
        description="How often the speed layer checks its query and the songs topic: a dead "
        "query is restarted, a lost or reset topic re-created and the feature table reconciled "
        "with the master dataset (0 = off).",
    )
    checkpoint_dir: str = Field("./var/checkpoints/songs", description="Speed-layer checkpoint.")
    feedback_checkpoint_dir: str | None = Field(
        None,
        description="Checkpoint of the listener-feedback query; default: the songs checkpoint's "
        "path with '-feedback' appended (so the two always move together).",
    )
    models_dir: str = Field("./var/models", description="Where Spark PipelineModels are saved.")
    max_offsets_per_trigger: int = Field(50_000, ge=1)
    fail_on_data_loss: bool = Field(
        False,
        description="Stop the query when checkpointed offsets vanished from the broker. Off by "
        "default: the source then reads the reset log from its start and the broker watch "
        "recovers the lost songs from the master dataset.",
    )
    pca_components: int = Field(5, ge=1, le=9)
    k_min: int = Field(4, ge=2)
    k_max: int = Field(
        12, ge=2, description="Top of the k range for small catalogs (always searched up to here)."
    )
    k_growth_songs: int = Field(
        100,
        ge=1,
        description="The k range grows with the catalog: its top is "
        "max(k_max, min(k_max_cap, round(sqrt(songs / k_growth_songs)))).",
    )
    k_max_cap: int = Field(
        24, ge=2, description="How far the catalog's growth can raise the top of the k range."
    )
    k_candidates: int = Field(
        6,
        ge=2,
        description="At most this many k values are fitted and scored, spread evenly over the "
        "range (both ends included): 4, 6, .., 12 for 4..12; 4, 8, .., 24 for 4..24.",
    )
    kmeans_seed: int = 42
    kmeans_max_iter: int = Field(
        20, ge=1, description="Most KMeans iterations per k candidate (Spark's default, 20)."
    )
    k_search_threads: int = Field(
        2,
        ge=1,
        description="k candidates fitted at the same time (each KMeans iteration is a small "
        "Spark job; two at once keep local[2]'s cores busy).",
    )
    silhouette_sample: int = Field(
        50_000,
        ge=100,
        description="A bigger catalog is fitted (scaler, PCA, KMeans candidates, silhouette) "
        "on a uniform random sample of this many songs; every song is then assigned.",
    )
    min_songs_for_model: int = Field(50, ge=2)
    retrain_growth_fraction: float = Field(0.25, gt=0)
    artist_profiles: bool = Field(
        True,
        description="Recompute every artist's profile on each retrain and keep them current "
        "from the stream (docs/similarity.md). Off: no artist_profiles rows are written.",
    )
    retrain_interval_seconds: float = Field(
        0.0,
        ge=0,
        description="Retrain on a schedule every this many seconds (0 = off; e.g. 3600).",
    )
    rebuild_chunk_rows: int = Field(
        20_000,
        ge=1,
        description="Songs per transaction (and per catalog-change event) of a rebuild.",
    )
    database_retry_seconds: float = Field(
        0.0,
        ge=0,
        description="How long a micro-batch waits for an unreachable database (retrying with "
        "backoff) before the query stops; 0 = until the database answers again.",
    )
    auto_retrain: bool = Field(True, description="Train after micro-batches when the rules say so.")
    ensure_topics: bool = Field(True, description="Create the topics at start-up if missing.")

    def spark_conf(self) -> dict[str, Any]:
        """Spark settings of the driver by their full names (memory; the scheduler's pools;
        authentication with the cluster when a secret is set)."""
        from emergify_stream.scheduler_pools import scheduler_conf

        conf: dict[str, Any] = {"spark.driver.memory": self.spark_driver_memory}
        conf |= scheduler_conf(self)
        if self.spark_auth_secret is not None and self.spark_auth_secret.get_secret_value():
            conf["spark.authenticate"] = "true"
            conf["spark.authenticate.secret"] = self.spark_auth_secret.get_secret_value()
        return conf

    @property
    def feedback_checkpoint(self) -> str:
        """Where the feedback query keeps its checkpoint."""
        return self.feedback_checkpoint_dir or f"{self.checkpoint_dir.rstrip('/')}-feedback"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
