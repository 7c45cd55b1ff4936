//! `/metrics`: what `/stats` shows, in Prometheus text.
//!
//! At each scrape the counters are read from herder's `stats()` and recorded through the `metrics`
//! facade into a recorder of this scrape's own (`metrics::with_local_recorder`: no global
//! recorder is installed), which `metrics-exporter-prometheus` renders. Names are `herder_…`,
//! labelled by the primitive's name: `herder_cache_hits{cache="authors"}`,
//! `herder_dataloader_batches{loader="reviews"}`, `herder_redis_l2_hits{tier="year_stats"}`;
//! the demo's own totals are `herder_demo_…`.

use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::Value;

/// Fields that are levels, not running totals.
const GAUGES: &[&str] = &[
    "entries",
    "weight",
    "in_flight",
    "memoized",
    "largest_batch",
    "invalidations_pending",
    "db_latency_us",
    "uptime_ms",
];

/// Renders `stats` (the `/stats` document) as Prometheus text.
pub(crate) fn render(stats: &Value) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        numbers(stats, "herder_demo", None);
        if let Some(loaders) = stats["loaders"].as_object() {
            for (name, counters) in loaders {
                numbers(counters, "herder_dataloader", Some(("loader", name)));
            }
        }
        if let Some(caches) = stats["caches"].as_object() {
            for (name, counters) in caches {
                numbers(counters, "herder_cache", Some(("cache", name)));
            }
        }
        numbers(
            &stats["year_cache"],
            "herder_cache",
            Some(("cache", "year_stats")),
        );
        numbers(
            &stats["redis"],
            "herder_redis",
            Some(("tier", "year_stats")),
        );
    });
    handle.render()
}

/// Records every number directly under `object` as `{prefix}_{field}`, with `label`.
fn numbers(object: &Value, prefix: &str, label: Option<(&str, &str)>) {
    let Some(object) = object.as_object() else {
        return;
    };
    for (field, value) in object {
        let Some(value) = value.as_u64() else {
            continue;
        };
        let name = format!("{prefix}_{field}");
        let labels: Vec<(String, String)> = label
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if GAUGES.contains(&field.as_str()) {
            metrics::gauge!(name, &labels).set(value as f64);
        } else {
            metrics::counter!(name, &labels).absolute(value);
        }
    }
}
