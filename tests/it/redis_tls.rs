//! Redis over TLS (docs/reference.md#configuration `rediss://`, `REDIS_TLS_*`): real replica
//! processes against a real `redis-server --tls-port` whose certificates a private CA made for the
//! test.

use std::path::Path;
use std::time::Duration;

use crate::helpers::*;
use testkit::ReplicaProcess;
use testkit::tls::{TestCa, TlsRedisServer};

/// This file's replicas, with the `REDIS_TLS_*` files `tls` names.
fn spawn(redis: &TlsRedisServer, id: &str, tls: &[(&'static str, &Path)]) -> ReplicaProcess {
    tls.iter()
        .fold(
            ReplicaEnv::new(redis.url(), 5).with("RENEW_INTERVAL_SECS", 0.2),
            |env, (var, path)| env.with(var, path.display()),
        )
        .spawn(id)
}

async fn readyz(replica: &ReplicaProcess) -> (u16, String) {
    let response = client().get(replica.url("/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Posts the webhook until it is admitted: a brand-new Redis may hold the first admissions for one
/// tick (docs/reference.md#admission, `calls:epoch`); a refused webhook takes no slot, so retrying
/// is harmless.
async fn admitted(replica: &ReplicaProcess, n: usize) -> String {
    eventually(Duration::from_secs(10), || async {
        let (status, twiml) = voice_at(&replica.url("/twilio/voice"), &sid(n)).await;
        (status == 200).then_some(twiml)
    })
    .await
    .unwrap_or_else(|| panic!("call {n} never admitted; log:\n{}", replica.log()))
}

fn active(redis: &TlsRedisServer) -> String {
    redis.cli(&["GET", "calls:active_count"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_and_calls_are_admitted_and_released_over_tls() {
    let ca = TestCa::new("private").unwrap();
    let redis = TlsRedisServer::start(&ca, false).unwrap();
    let replica = spawn(&redis, "tls-a", &[("REDIS_TLS_CA_FILE", ca.ca_file())]);

    let ready = eventually(Duration::from_secs(10), || async {
        Some(readyz(&replica).await).filter(|(status, _)| *status == 200)
    })
    .await;
    assert!(ready.is_some(), "never ready; log:\n{}", replica.log());

    // A call with its stream: admitted, live, released by `stop`.
    let twiml = admitted(&replica, 1).await;
    let url = format!("ws://127.0.0.1:{}/twilio/stream", replica.port);
    assert!(stream_url_of(&twiml).ends_with("/twilio/stream"), "{twiml}");
    let mut stream = TwilioStream::connect(&url).await;
    stream.connected().await;
    stream.start(&sid(1)).await;
    stream.echo_round(3).await;
    assert_eq!(active(&redis), "1");
    let state = redis
        .cli(&["GET", &format!("calls:state:{}", sid(1))])
        .unwrap();
    assert!(state.contains("\"status\":\"active\""), "{state}");
    stream.stop(&sid(1)).await;
    let released = eventually(Duration::from_secs(5), || async {
        (active(&redis) == "0").then_some(())
    })
    .await;
    assert!(released.is_some(), "slot not released: {}", active(&redis));

    // A call that never streams: the final status callback releases it.
    admitted(&replica, 2).await;
    assert_eq!(active(&redis), "1");
    assert_eq!(
        status_at(
            &format!("http://127.0.0.1:{}", replica.port),
            &sid(2),
            "completed"
        )
        .await,
        204
    );
    assert_eq!(active(&redis), "0");
    assert_eq!(redis.cli(&["GET", "calls:stats:started"]).unwrap(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_signed_by_another_ca_is_never_trusted() {
    let ours = TestCa::new("ours").unwrap();
    let theirs = TestCa::new("theirs").unwrap();
    let redis = TlsRedisServer::start(&theirs, false).unwrap();
    let replica = spawn(&redis, "tls-b", &[("REDIS_TLS_CA_FILE", ours.ca_file())]);

    // Over the whole hold-off a fresh Redis could impose, nothing is ever admitted.
    for n in 0..10 {
        let (status, body) = voice_at(&replica.url("/twilio/voice"), &sid(n)).await;
        assert_eq!(
            status, 503,
            "call {n} admitted through an untrusted Redis: {body}"
        );
        let (ready, why) = readyz(&replica).await;
        assert_eq!(ready, 503, "{why}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not one command reached the data: no key was ever written.
    assert_eq!(redis.cli(&["DBSIZE"]).unwrap(), "0");
    let log = replica.log();
    assert!(
        log.contains("Redis TLS handshake failed")
            && log.contains("not trusted (unknown issuer)")
            && log.contains("REDIS_TLS_CA_FILE"),
        "the log says why:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_where_redis_requires_one() {
    let ca = TestCa::new("mtls").unwrap();
    let redis = TlsRedisServer::start(&ca, true).unwrap();
    let client = ca.client_cert("replica").unwrap();
    let with_cert = spawn(
        &redis,
        "tls-c",
        &[
            ("REDIS_TLS_CA_FILE", ca.ca_file()),
            ("REDIS_TLS_CERT_FILE", &client.cert),
            ("REDIS_TLS_KEY_FILE", &client.key),
        ],
    );
    let without = spawn(&redis, "tls-d", &[("REDIS_TLS_CA_FILE", ca.ca_file())]);

    admitted(&with_cert, 1).await;
    assert_eq!(active(&redis), "1");
    assert_eq!(readyz(&with_cert).await.0, 200);

    for n in 10..15 {
        assert_eq!(
            voice_at(&without.url("/twilio/voice"), &sid(n)).await.0,
            503
        );
    }
    assert_eq!(readyz(&without).await.0, 503);
    assert_eq!(
        active(&redis),
        "1",
        "only the replica with a certificate wrote"
    );
    let log = without.log();
    assert!(
        log.contains("Redis TLS handshake failed: the server requires a client certificate")
            && log.contains("REDIS_TLS_CERT_FILE"),
        "the log says why:\n{log}"
    );
}
