//! The TLS front end to end: webhooks over https and Media Streams over wss through a real nginx
//! rendered with the template's TLS listener, a certificate from the test's own CA, real replicas.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::*;
use rustls::pki_types::pem::PemObject;
use testkit::nginx::{NginxProcess, TlsFiles};
use testkit::{RedisServer, ReplicaProcess};
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A throw-away CA and a certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
struct TestPki {
    _dir: tempfile::TempDir,
    ca_pem: String,
    files: TlsFiles,
}

/// A CA and a leaf rather than one self-signed certificate: clients verify a chain to a root they
/// were given, as they would with a real certificate, and verification is never switched off.
fn make_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "prosaas-calls test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

    let dir = tempfile::Builder::new()
        .prefix("prosaas-calls-tls-")
        .tempdir()
        .unwrap();
    let files = TlsFiles {
        certificate: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.certificate, leaf.pem()).unwrap();
    std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
    TestPki {
        _dir: dir,
        ca_pem: ca.pem(),
        files,
    }
}

/// An https client that trusts the test CA and nothing else.
fn https_client(pki: &TestPki) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap()
}

/// A rustls client config for wss:// that trusts the test CA only, limited to `versions`.
fn wss_config(
    pki: &TestPki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes());
    roots.add(der.unwrap()).unwrap();
    // The provider is named, not taken from the process default: only ring is compiled in.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

async fn post_voice(client: &reqwest::Client, url: &str, call_sid: &str) -> (u16, String) {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("CallSid", call_sid),
            ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
            ("From", "+15005550006"),
            ("To", "+15005550001"),
            ("CallStatus", "ringing"),
            ("Direction", "inbound"),
        ])
        .finish();
    let response = client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("https webhook");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn post_status(client: &reqwest::Client, base: &str, call_sid: &str) -> u16 {
    client
        .post(format!("{base}/twilio/status"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("CallSid={call_sid}&CallStatus=completed"))
        .send()
        .await
        .expect("https status callback")
        .status()
        .as_u16()
}

async fn active_count(redis: &Arc<RedisServer>) -> String {
    let redis = redis.clone();
    tokio::task::spawn_blocking(move || redis.cli(&["GET", "calls:active_count"]).unwrap())
        .await
        .unwrap()
}

/// A whole call through the TLS listener: webhook over https (its stream URL must be wss:// on the
/// TLS port, from nginx's X-Forwarded-Proto), the stream over wss with `versions` only, echoes,
/// `stop`, and the status callback over https.
async fn call_over_tls(
    nginx: &NginxProcess,
    pki: &TestPki,
    call_sid: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) {
    let client = https_client(pki);
    let (status, twiml) = post_voice(&client, &nginx.https_url("/twilio/voice"), call_sid).await;
    assert_eq!(status, 200, "{twiml}\n{}", nginx.error_log());
    let stream_url = stream_url_of(&twiml);
    let tls_port = nginx.tls_port.unwrap();
    assert_eq!(
        stream_url,
        format!("wss://127.0.0.1:{tls_port}/twilio/stream")
    );

    let request = stream_url.into_client_request().unwrap();
    let connector = Connector::Rustls(Arc::new(wss_config(pki, versions)));
    let (ws, response) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await
            .expect("wss upgrade through the TLS front");
    assert_eq!(response.status().as_u16(), 101);
    let mut stream = TwilioStream::over(ws);
    stream.connected().await;
    stream.start(call_sid).await;
    stream.echo_round(5).await;
    stream.stop(call_sid).await;
    assert!(
        stream.closed_within(Duration::from_secs(5)).await,
        "{call_sid}: the server kept the stream open after stop"
    );
    assert_eq!(
        post_status(&client, &nginx.https_url(""), call_sid).await,
        204
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_streams_over_tls() {
    let nginx_bin = nginx_binary();
    let began = std::time::Instant::now();
    let redis = Arc::new(RedisServer::start_tcp().expect("redis-server"));
    let env = [
        ("REDIS_URL", redis.url()),
        ("MAX_CONCURRENT_CALLS", "10".to_owned()),
        ("RENEW_INTERVAL_SECS", "1".to_owned()),
        ("CALL_LEASE_SECS", "3".to_owned()),
    ];
    let binary = Path::new(env!("CARGO_BIN_EXE_prosaas-calls"));
    let replicas: Vec<ReplicaProcess> = (1..=2)
        .map(|i| ReplicaProcess::spawn(binary, &format!("tls-{i}"), &env).expect("replica"))
        .collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let pki = make_pki();
    let nginx = NginxProcess::start_tls(&nginx_bin, &ports, &pki.files).expect("nginx with TLS");
    let client = https_client(&pki);

    // A fresh Redis may hold admissions for a moment (reason `recovering`): the first webhook over
    // TLS is retried until admitted, then released, so the calls below start from zero.
    let first = sid(700_000);
    let admitted = eventually(Duration::from_secs(10), || async {
        let (status, _) = post_voice(&client, &nginx.https_url("/twilio/voice"), &first).await;
        (status == 200).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "no webhook admitted over https");
    assert_eq!(
        post_status(&client, &nginx.https_url(""), &first).await,
        204
    );
    assert_eq!(active_count(&redis).await, "0");

    // TLS 1.3 and TLS 1.2 each carry a whole call.
    call_over_tls(&nginx, &pki, &sid(700_001), &[&rustls::version::TLS13]).await;
    call_over_tls(&nginx, &pki, &sid(700_002), &[&rustls::version::TLS12]).await;
    assert_eq!(active_count(&redis).await, "0");

    // The TLS listener shares the public server's locations: metrics stay internal.
    let metrics = client
        .get(nginx.https_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 403);

    // Verification is real: a client that does not trust the test CA is refused the handshake.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let refused = stranger.get(nginx.https_url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "an untrusted client completed a TLS handshake"
    );

    // The plain listener works as before, and gives a ws:// stream URL on its own port.
    let (status, twiml) = voice_at(&nginx.url("/twilio/voice"), &sid(700_003)).await;
    assert_eq!(status, 200, "{twiml}");
    assert_eq!(
        stream_url_of(&twiml),
        format!("ws://127.0.0.1:{}/twilio/stream", nginx.port)
    );
    assert_eq!(
        status_at(&nginx.url(""), &sid(700_003), "completed").await,
        204
    );

    assert!(
        began.elapsed() < Duration::from_secs(45),
        "took {:?}",
        began.elapsed()
    );
}
