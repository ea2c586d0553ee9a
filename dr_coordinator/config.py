"""Settings of the demand-response coordinator (``ENERGY_DR__*``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from energy.config_types import Count, IdList, Name, OptionalHttpUrl, Seconds, SecretPolicy, SecretText, SettingsGroup

Fraction = Annotated[float, Field(gt=0, le=1)]
LongSeconds = Annotated[float, Field(gt=0, le=7 * 86400)]


class DrSettings(SettingsGroup):
    bms_connect_timeout_s: Seconds = 2.0
    bms_total_timeout_s: Seconds = 5.0
    bms_breaker_fail_max: Count = 3
    bms_breaker_reset_s: Seconds = 30.0
    bms_concurrency_per_facility: Count = 4
    dispatch_lead_s: Seconds = 60.0
    max_event_duration_s: LongSeconds = 3600.0 * 1.0 * 12
    min_event_duration_s: LongSeconds = 60.0
    max_start_skew_s: Seconds = 30.0  # a start this far in the past is still accepted (clock skew)
    webhook_queue_size: Count = 1_000
    webhook_rate_per_s: Seconds = 20.0
    webhook_burst: Count = 40
    webhook_hmac_window_s: Seconds = 300.0
    # Command worker: attempts before a command is failed for good (-> DLQ), backoff between them.
    bms_command_max_attempts: Count = 5
    bms_retry_base_s: Seconds = 0.5
    bms_retry_max_s: Seconds = 10.0
    restore_retry_interval_s: Seconds = 30.0  # a restore failed for good is still retried this often
    bms_lease_s: Seconds = 30.0  # an in_flight command whose worker died is retried after this
    # On SIGTERM the worker waits this long for BMS calls in flight, then hands their commands back
    # (lease ended) so another replica sends them at once; well inside terminationGracePeriodSeconds.
    worker_shutdown_wait_s: Seconds = 6.0
    worker_batch: Count = 200
    poll_interval_s: Seconds = 0.5
    reconcile_interval_s: Seconds = 30.0
    outbox_batch: Count = 500
    # Forecast guardrail (DR-7): what to do when the forecast is degraded or stale.
    forecast_policy: Literal["fixed_percentage", "hold"] = "fixed_percentage"
    forecast_max_age_s: LongSeconds = 3600.0 * 6
    fallback_shed_fraction: Fraction = 0.15  # share of HVAC load shed by the fixed-percentage fallback
    # Share of the expected load shed per SIMPLE level (1, 2, 3) when no kW target is given.
    simple_level_fraction: Fraction = 0.1
    # Measurement (DR-8).
    underperformance_ratio: Fraction = 0.8
    underperformance_after_s: Seconds = 300.0
    report_max_attempts: Count = 5
    # Settlement (decision 0431): ended events are re-measured this often for true-ups, until the
    # horizon after their end. The settlement run itself waits for the aggregation's lateness bound.
    settlement_rerun_s: Seconds = 60.0
    settlement_horizon_s: LongSeconds = 3 * 86400.0
    # meter.late_window events (aggregation, decision 0202) re-run the settlements they touch at once.
    late_windows_topic: Name = "meter-late-windows"
    late_windows_group: Name = "dr-settlement"
    vtn_token: Annotated[SecretText, SecretPolicy(min_length=16)] = SecretStr("local-ven-token")
    # Encrypts each utility's VEN credentials at rest (decision 0860); any random text of 32+ characters
    # (an AES-256 key is derived from it). The previous key stays readable during a rotation.
    credentials_key: Annotated[SecretText, SecretPolicy(min_length=32)] = SecretStr(
        "local-dev-ven-credentials-key-change-me"
    )
    credentials_previous_key: Annotated[SecretText | None, SecretPolicy(min_length=32, required=False)] = None
    # VEN runtime (decision 0411): one per utility with a VTN; polls events as a fallback to webhooks.
    ven_runtime_enabled: bool = True
    ven_poll_interval_s: LongSeconds = 60.0
    # Our webhook as the utilities' VTNs reach it; empty: http://<endpoints.api_host>:<endpoints.api_port>
    webhook_base_url: OptionalHttpUrl = ""
    # When set, BMS endpoints are "<bms_base_url>/<facility_id>" instead of bms_endpoints.url (isolated runs).
    bms_base_url: OptionalHttpUrl = ""
    # Only sagas of these utilities (comma-separated; empty = all). Lets tests run a private coordinator.
    only_utility_ids: IdList = ""

    @model_validator(mode="after")
    def _rotation(self) -> DrSettings:
        previous = self.credentials_previous_key
        if previous is not None and previous.get_secret_value() == self.credentials_key.get_secret_value():
            raise ValueError("credentials_previous_key equals credentials_key (a rotation needs a new key)")
        return self
