//! `/metrics`: herder's metrics, and the demo's own totals, in Prometheus text.
//!
//! herder and herder-redis record through the `metrics` facade (their `metrics` feature) into
//! the recorder that [`install`] makes global, before `serve` builds its caches, tier and
//! loaders (a primitive takes its handles from the recorder of its build). Every primitive is
//! named: `herder_cache_hits_total{name="authors"}`,
//! `herder_dataloader_batch_size{name="reviews"}`, `herder_redis_l2_hits_total{name="year_stats"}`.
//! A scrape calls [`herder::metrics::flush`] (the counters that herder keeps exact without a
//! facade call on its hot paths), records the demo's own totals (`herder_demo_…`, from
//! `/stats`), and renders.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;

/// Fields of `/stats` that are levels, not running totals.
const GAUGES: &[&str] = &["db_latency_us", "uptime_ms"];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Durations: 1 ms to 10 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Keys per loader call: 1 to the default batch limit, 1000.
const KEYS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Prometheus histograms (buckets, which add up across instances) rather than the exporter's
/// default summaries.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full("herder_dataloader_batch_size".to_owned()),
                KEYS,
            )
        })
        .expect("bucket lists are not empty")
}

/// Makes a Prometheus recorder the global one (once; `None` if another recorder was installed
/// first, and then `/metrics` shows only the demo's totals).
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| builder().install_recorder().ok())
        .as_ref()
}

/// Renders herder's metrics and the demo's totals (the numbers at the top of `stats`, the
/// `/stats` document) as Prometheus text.
pub(crate) fn render(stats: &Value) -> String {
    herder::metrics::flush();
    match install() {
        Some(handle) => {
            totals(stats);
            handle.render()
        }
        None => {
            let recorder = PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&recorder, || totals(stats));
            recorder.handle().render()
        }
    }
}

/// Records every number directly under `stats` as `herder_demo_{field}`.
fn totals(stats: &Value) {
    let Some(object) = stats.as_object() else {
        return;
    };
    for (field, value) in object {
        let Some(value) = value.as_u64() else {
            continue;
        };
        let name = format!("herder_demo_{field}");
        if GAUGES.contains(&field.as_str()) {
            metrics::gauge!(name).set(value as f64);
        } else {
            metrics::counter!(name).absolute(value);
        }
    }
}
