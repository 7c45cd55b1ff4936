//! `rediss://` against a local `redis-server` that speaks only TLS, with a certificate authority
//! the test makes (feature `tls-rustls`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use herder::Cache;
use herder_redis::{RedisConnection, RedisTier};
use redis::TlsCertificates;
use support::eventually;
use support::servers::ConfiguredRedis;

fn trusting(redis: &ConfiguredRedis) -> redis::Client {
    let certificates = TlsCertificates {
        client_tls: None,
        root_cert: redis.ca_pem().map(<[u8]>::to_vec),
    };
    redis::Client::build_with_tls(redis.url(), certificates).unwrap()
}

fn cache(tier: &RedisTier<u64, String>) -> Cache<u64, String> {
    Cache::builder()
        .max_capacity(100)
        .time_to_live(Duration::from_secs(60))
        .tier(Arc::new(tier.clone()))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_values_and_invalidations_over_tls() {
    let Some(redis) = ConfiguredRedis::with_tls() else {
        return;
    };
    assert!(redis.url().starts_with("rediss://"));
    let tiers: Vec<_> = (0..2)
        .map(|_| {
            let connection = RedisConnection::from_client(trusting(&redis)).unwrap();
            RedisTier::<u64, String>::builder_with(&connection)
                .namespace("tls")
                // Far above what loopback needs: a call past it would (rightly) go without Redis.
                .budget(Duration::from_secs(2))
                .build()
                .unwrap()
        })
        .collect();
    for tier in &tiers {
        tier.ping().await.unwrap();
    }
    let (a, b) = (cache(&tiers[0]), cache(&tiers[1]));
    assert!(
        eventually(Duration::from_secs(5), || tiers[1].stats().subscriptions
            == 1)
        .await
    );
    assert_eq!(a.get_with(1, || async { "one".into() }).await, "one");
    assert_eq!(
        b.get_with(1, || async { unreachable!("b reads a's value") })
            .await,
        "one"
    );
    assert_eq!((tiers[0].stats().fills, tiers[1].stats().l2_hits), (1, 1));
    a.invalidate(&1);
    assert!(eventually(Duration::from_secs(5), || b.get(&1).is_none()).await);
    let stats = [tiers[0].stats(), tiers[1].stats()];
    assert!(stats.iter().all(|s| s.errors == 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_nobody_trusts_is_an_error_that_says_so() {
    let Some(redis) = ConfiguredRedis::with_tls() else {
        return;
    };
    // The system's roots do not include the test's authority. (A budget far above what the
    // handshake needs: the connect timeout follows it, and would otherwise be the reason.)
    let error = RedisTier::<u64, String>::builder(&redis.url())
        .budget(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(error.is_connect(), "{error}");
    let reason = error.to_string().to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("issuer"),
        "{reason}"
    );
}
