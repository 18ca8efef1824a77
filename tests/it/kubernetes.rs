//! Kubernetes as deploy/kubernetes describes it (docs/reference.md#kubernetes, docs/kubernetes.md),
//! without a cluster: the production Deployment's shutdown applied to replicas under load, and its
//! autoscaling rule.
//!
//! Every number comes from the rendered production overlay (scripts/render-kubernetes, that is
//! `kubectl kustomize`): change the manifests and these tests follow. The test plays Kubernetes'
//! part with real processes: redis-server, replicas of the built binary, nginx for the balancer that
//! follows the Service's endpoints (a pod leaves it by a reload, as endpoints are removed), and
//! Prometheus for the autoscaler's query. The shutdown tests run the manifest's real seconds.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::helpers::*;
use prosaas_calls_sim::run;
use prosaas_calls_sim::target::Target;
use testkit::nginx::{NginxProcess, find_nginx};
use testkit::prometheus::{PrometheusServer, ScrapeJob, find_prometheus};
use testkit::{RedisServer, ReplicaProcess};

// ---- The rendered production overlay

/// The objects of the production overlay as `kubectl apply -k` would send them, rendered once.
fn production() -> &'static [Value] {
    static RENDERED: OnceLock<Vec<Value>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let out = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/render-kubernetes");
        let run = std::process::Command::new("bash")
            .arg(script)
            .arg(out.path())
            .output()
            .expect("run scripts/render-kubernetes");
        assert!(
            run.status.success(),
            "scripts/render-kubernetes failed: these tests read the production overlay through \
             `kubectl kustomize` (kubectl 1.27 or later must be installed).\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let text = std::fs::read_to_string(out.path().join("production.yaml")).unwrap();
        serde_norway::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("rendered YAML"))
            .filter(|doc| !doc.is_null())
            .collect()
    })
}

fn object(kind: &str, name_prefix: &str) -> &'static Value {
    production()
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}* in the production overlay"))
}

fn calls_container() -> &'static Value {
    object("Deployment", "prosaas-calls")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "calls")
        .expect("the calls container")
}

fn env_literal(name: &str) -> Option<String> {
    calls_container()["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
        .map(str::to_owned)
}

/// The numbers of Kubernetes' termination sequence, from the production Deployment.
#[derive(Debug, Clone)]
struct Termination {
    pre_stop: Duration,
    grace: Duration,
    drain: Duration,
    min_ready: Duration,
    max_surge: usize,
}

fn termination() -> Termination {
    let deployment = object("Deployment", "prosaas-calls");
    let pre_stop = &calls_container()["lifecycle"]["preStop"];
    let pre_stop = pre_stop["sleep"]["seconds"]
        .as_u64()
        .or_else(|| pre_stop["exec"]["command"][1].as_str()?.parse().ok())
        .expect("a preStop sleep");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let drain: f64 = env_literal("DRAIN_TIMEOUT_SECS")
        .expect("DRAIN_TIMEOUT_SECS in the Deployment's env")
        .parse()
        .unwrap();
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        rolling["maxUnavailable"].as_u64(),
        Some(0),
        "the rolling-update test models maxUnavailable 0: {rolling}"
    );
    Termination {
        pre_stop: Duration::from_secs(pre_stop),
        grace: Duration::from_secs(grace),
        drain: Duration::from_secs_f64(drain),
        min_ready: Duration::from_secs(deployment["spec"]["minReadySeconds"].as_u64().unwrap_or(0)),
        max_surge: rolling["maxSurge"].as_u64().expect("an integer maxSurge") as usize,
    }
}

/// The replicas' environment as the production pods get it: the ConfigMap, then the Deployment's
/// own literals; the Redis and the cap are the test's.
fn pod_env(redis: &RedisServer, cap: u64) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = object("ConfigMap", "prosaas-calls-config")["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    for entry in calls_container()["env"].as_array().unwrap() {
        if let Some(value) = entry["value"].as_str() {
            env.push((entry["name"].as_str().unwrap().to_owned(), value.to_owned()));
        }
    }
    env.retain(|(k, _)| k != "MAX_CONCURRENT_CALLS" && k != "REDIS_URL");
    env.push(("REDIS_URL".into(), redis.url()));
    env.push(("MAX_CONCURRENT_CALLS".into(), cap.to_string()));
    env
}

fn spawn_pod(name: &str, env: &[(String, String)]) -> ReplicaProcess {
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ReplicaProcess::spawn(binary(), name, &env).expect("replica")
}

// ---- Kubernetes' part: the balancer that follows the endpoints, and a pod's termination

/// nginx in front of the pods, following the Service's ready endpoints.
struct Balancer {
    nginx: NginxProcess,
    endpoints: Mutex<Vec<u16>>,
}

impl Balancer {
    /// Changes the endpoints and reloads nginx; returns how long until the old worker stopped
    /// accepting (the pod is out of the balancer) and the new one serves.
    fn update(&self, change: impl FnOnce(&mut Vec<u16>)) -> Duration {
        let mut endpoints = self.endpoints.lock().unwrap();
        change(&mut endpoints);
        self.nginx.set_upstreams(&endpoints).expect("nginx reload")
    }
}

#[derive(Debug)]
struct Terminated {
    pod: String,
    exit: Option<i32>,
    killed: bool,
    /// From the pod's deletion (endpoints removal and preStop start) to its exit.
    after_deletion: Duration,
    /// From SIGTERM to its exit.
    after_sigterm: Duration,
    /// How long nginx took to stop sending it new requests.
    out_of_balancer: Duration,
    /// Calls live on it when SIGTERM came.
    live_at_sigterm: usize,
    log: String,
}

/// What Kubernetes does when it deletes a pod: the endpoint controller takes it out of the Service
/// (the balancer stops sending it new requests) while the kubelet runs its preStop; then SIGTERM;
/// then SIGKILL if it is still running when the grace period, counted from the deletion, is over.
async fn terminate(
    pod: ReplicaProcess,
    balancer: Arc<Balancer>,
    redis: Arc<RedisServer>,
    t: Termination,
) -> Terminated {
    let deleted = Instant::now();
    let port = pod.port;
    let leaving = {
        let balancer = balancer.clone();
        tokio::task::spawn_blocking(move || balancer.update(|e| e.retain(|&p| p != port)))
    };
    tokio::time::sleep(t.pre_stop).await;
    let out_of_balancer = leaving.await.unwrap();
    let live_at_sigterm = calls_on(&redis, &pod.id).await;
    pod.signal("TERM").expect("SIGTERM");
    let sigterm = Instant::now();
    let left = t.grace.saturating_sub(deleted.elapsed());
    tokio::task::spawn_blocking(move || {
        let mut pod = pod;
        let exit = pod.wait_exit(left);
        let killed = exit.is_err();
        if killed {
            pod.kill9();
        }
        Terminated {
            pod: pod.id.clone(),
            exit: exit.ok().flatten(),
            killed,
            after_deletion: deleted.elapsed(),
            after_sigterm: sigterm.elapsed(),
            out_of_balancer,
            live_at_sigterm,
            log: pod.log(),
        }
    })
    .await
    .unwrap()
}

/// Live calls whose state names `replica`, as an operator reads Redis.
async fn calls_on(redis: &RedisServer, replica: &str) -> usize {
    let members = redis_cli(redis, &["ZRANGE", "calls:slots", "0", "-1"]).await;
    let mut on = 0;
    for call_sid in members.lines().filter(|l| !l.is_empty()) {
        let state = redis_state(redis, call_sid).await;
        if state["replica"] == replica && state["status"] == "active" {
            on += 1;
        }
    }
    on
}

async fn wait_ready(pod: &ReplicaProcess) {
    let ready = eventually(Duration::from_secs(20), || async {
        (get_text(&pod.url("/readyz")).await.0 == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "{} never ready: {}", pod.id, pod.log());
}

// ---- The load: steady calls that outlive the whole sequence, and new callers arriving through it

#[derive(Debug, Clone, Copy)]
enum Sequence {
    /// `kubectl delete pod`, a node drain, an eviction: one pod of three.
    DeleteOnePod,
    /// `kubectl scale --replicas=1` from 3: both pods at once (harsher than the autoscaler, which
    /// takes one pod at a time).
    ScaleDownTo1,
    /// A new image: the Deployment's rolling update (maxSurge new pods, each ready and available
    /// for minReadySeconds before as many old pods are deleted).
    RollingUpdate,
}

const STEADY_CALLS: u64 = 24;

async fn under_load(sequence: Sequence) {
    let t = termination();
    let nginx_bin = find_nginx().expect(
        "no nginx binary: install it (apt-get install nginx-light; .ci/run does), or set NGINX",
    );
    let redis = Arc::new(RedisServer::start_tcp().expect("redis-server"));
    let env = pod_env(&redis, 1_000);
    let pods: Vec<ReplicaProcess> = (1..=3)
        .map(|i| spawn_pod(&format!("calls-old-{i}"), &env))
        .collect();
    let ports: Vec<u16> = pods.iter().map(|p| p.port).collect();
    let balancer = Arc::new(Balancer {
        nginx: NginxProcess::start_reloadable(&nginx_bin, &ports).expect("nginx"),
        endpoints: Mutex::new(ports),
    });
    let public = balancer.nginx.url("");

    // The work before the last deletion (a rolling update's surges), so the steady calls outlive it.
    let surges = 3usize.div_ceil(t.max_surge.max(1)) as u32;
    let work = match sequence {
        Sequence::RollingUpdate => (t.min_ready + Duration::from_secs(5)) * surges,
        _ => Duration::ZERO,
    };
    let sequence_takes = work + t.pre_stop + t.drain;
    let steady = tokio::spawn(run::run(sim_run(
        Target::new(&public, None, None).unwrap(),
        STEADY_CALLS,
        Duration::from_secs(2),
        sequence_takes + Duration::from_secs(20),
        41,
    )));
    let all_live = eventually(Duration::from_secs(30), || async {
        (active_count(&redis).await == STEADY_CALLS).then_some(())
    })
    .await;
    assert!(all_live.is_some(), "the steady calls never all went live");
    // About one new caller a second from now until after the last drain deadline, 5 s each.
    let arrival_window = sequence_takes + Duration::from_secs(5);
    let arriving_calls = arrival_window.as_secs();
    let arriving = tokio::spawn(run::run(sim_run(
        Target::new(&public, None, None).unwrap(),
        arriving_calls,
        arrival_window,
        Duration::from_secs(5),
        42,
    )));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let began = Instant::now();
    let mut old = pods.into_iter();
    let mut surged = Vec::new();
    let mut deletions = Vec::new();
    let delete = |pod: ReplicaProcess| {
        tokio::spawn(terminate(pod, balancer.clone(), redis.clone(), t.clone()))
    };
    match sequence {
        Sequence::DeleteOnePod => deletions.push(delete(old.next().unwrap())),
        Sequence::ScaleDownTo1 => {
            deletions.push(delete(old.next().unwrap()));
            deletions.push(delete(old.next().unwrap()));
        }
        Sequence::RollingUpdate => {
            let olds: Vec<ReplicaProcess> = old.by_ref().collect();
            let mut olds = olds.into_iter();
            let mut n = 0;
            loop {
                let batch: Vec<ReplicaProcess> = olds.by_ref().take(t.max_surge).collect();
                if batch.is_empty() {
                    break;
                }
                // The new pods start; each joins the endpoints once ready, and counts as available
                // minReadySeconds later; only then are as many old pods deleted.
                let mut fresh = Vec::new();
                for _ in &batch {
                    n += 1;
                    fresh.push(spawn_pod(&format!("calls-new-{n}"), &env));
                }
                for pod in &fresh {
                    wait_ready(pod).await;
                    let port = pod.port;
                    let b = balancer.clone();
                    tokio::task::spawn_blocking(move || b.update(|e| e.push(port)))
                        .await
                        .unwrap();
                }
                tokio::time::sleep(t.min_ready).await;
                surged.extend(fresh);
                for pod in batch {
                    deletions.push(delete(pod));
                }
            }
        }
    }
    let mut terminated = Vec::new();
    for deletion in deletions {
        terminated.push(deletion.await.expect("termination"));
    }
    let sequence_took = began.elapsed();

    let steady = steady.await.expect("steady run");
    let arriving = arriving.await.expect("arriving run");
    for pod in &terminated {
        let tail: Vec<&str> = pod.log.lines().rev().take(20).collect();
        assert!(
            !pod.killed,
            "{}: still running at the grace period ({:?}), SIGKILLed; log tail:\n{}",
            pod.pod,
            t.grace,
            tail.join("\n")
        );
        assert_eq!(pod.exit, Some(0), "{}: exit code", pod.pod);
        assert!(
            pod.after_deletion < t.grace,
            "{}: exited {:?} after deletion, grace {:?}",
            pod.pod,
            pod.after_deletion,
            t.grace
        );
        assert!(
            pod.out_of_balancer < t.pre_stop,
            "{}: the balancer took {:?}, longer than preStop {:?}",
            pod.pod,
            pod.out_of_balancer,
            t.pre_stop
        );
    }
    let total = STEADY_CALLS + arriving_calls;
    for (name, report, calls) in [
        ("steady", &steady, STEADY_CALLS),
        ("arriving", &arriving, arriving_calls),
    ] {
        let summary = format!("{name}: {report:#?}\n{}", balancer.nginx.error_log());
        assert_eq!(report.outcome, "finished", "{summary}");
        assert_eq!(report.calls.rejected, 0, "nobody refused: {summary}");
        assert_eq!(report.calls.failed, 0, "nobody cut: {summary}");
        assert_eq!(report.calls.completed, calls, "{summary}");
        assert_eq!(report.continuity.ended_early, 0, "{summary}");
        assert_eq!(
            report.continuity.continued, report.continuity.streams_lost,
            "every stream cut by a drain continued: {summary}"
        );
    }
    let handed_over: usize = terminated.iter().map(|p| p.live_at_sigterm).sum();
    assert!(
        handed_over > 0 && steady.continuity.continued > 0,
        "no call was live on a deleted pod at its SIGTERM: the test proved nothing"
    );
    let (p50, p99, max) = gap_ms(&steady);
    assert!(
        p99 < 2_000.0,
        "audio came back within 2 s for every handed-over caller: p99 {p99} ms"
    );
    let settled = eventually(Duration::from_secs(30), || async {
        (active_count(&redis).await == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the count did not come back to 0");
    assert_eq!(
        redis_cli(&redis, &["GET", "calls:stats:started"]).await,
        total.to_string(),
        "every call counted once"
    );
    eprintln!(
        "kubernetes {sequence:?} (preStop {:?}, DRAIN_TIMEOUT_SECS {:?}, grace {:?}) in {sequence_took:?} \
         under {STEADY_CALLS} steady calls and {arriving_calls} arriving: refused 0, cut 0; streams \
         handed over {} (steady) + {} (arriving); audio gap per handed-over caller p50 {p50:.0} ms \
         p99 {p99:.0} ms max {max:.0} ms",
        t.pre_stop, t.drain, t.grace, steady.continuity.continued, arriving.continuity.continued,
    );
    for pod in &terminated {
        eprintln!(
            "  {}: out of nginx in {:?}, {} calls live at SIGTERM, exit {:?} {:.1} s after SIGTERM, \
             {:.1} s after deletion (grace {} s)",
            pod.pod,
            pod.out_of_balancer,
            pod.live_at_sigterm,
            pod.exit,
            pod.after_sigterm.as_secs_f64(),
            pod.after_deletion.as_secs_f64(),
            t.grace.as_secs()
        );
    }
    drop(surged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_pod_cuts_and_refuses_nobody() {
    under_load(Sequence::DeleteOnePod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scale_down_from_3_to_1_cuts_and_refuses_nobody() {
    under_load(Sequence::ScaleDownTo1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_cuts_and_refuses_nobody() {
    under_load(Sequence::RollingUpdate).await;
}

// ---- Autoscaling: the manifest's query and threshold against real replicas' metrics

/// The KEDA trigger as the production overlay holds it.
struct Trigger {
    query: String,
    threshold: f64,
    min: u32,
    max: u32,
    behavior: Behavior,
}

fn trigger() -> Trigger {
    let scaled = object("ScaledObject", "prosaas-calls");
    let prometheus = scaled["spec"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "prometheus")
        .expect("a prometheus trigger");
    assert_eq!(
        prometheus["metricType"], "AverageValue",
        "replicas = ceil(value / threshold) needs AverageValue"
    );
    Trigger {
        query: prometheus["metadata"]["query"].as_str().unwrap().to_owned(),
        threshold: prometheus["metadata"]["threshold"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        min: scaled["spec"]["minReplicaCount"].as_u64().unwrap() as u32,
        max: scaled["spec"]["maxReplicaCount"].as_u64().unwrap() as u32,
        behavior: Behavior::of(
            &scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        ),
    }
}

/// One of a behavior's scaling policies.
#[derive(Debug, Clone)]
struct Policy {
    pods: bool,
    value: f64,
    period: u64,
}

#[derive(Debug, Clone)]
struct Rules {
    window: u64,
    /// selectPolicy Max (the default): the policy allowing the biggest change.
    select_max: bool,
    policies: Vec<Policy>,
}

#[derive(Debug, Clone)]
struct Behavior {
    up: Rules,
    down: Rules,
}

impl Behavior {
    fn of(behavior: &Value) -> Self {
        let rules = |r: &Value, default_window: u64| Rules {
            window: r["stabilizationWindowSeconds"]
                .as_u64()
                .unwrap_or(default_window),
            select_max: r["selectPolicy"].as_str().unwrap_or("Max") == "Max",
            policies: r["policies"]
                .as_array()
                .expect("explicit policies")
                .iter()
                .map(|p| Policy {
                    pods: p["type"] == "Pods",
                    value: p["value"].as_f64().unwrap(),
                    period: p["periodSeconds"].as_u64().unwrap(),
                })
                .collect(),
        };
        Self {
            up: rules(&behavior["scaleUp"], 0),
            down: rules(&behavior["scaleDown"], 300),
        }
    }
}

/// The HorizontalPodAutoscaler's algorithm (the one KEDA's ScaledObject drives), as Kubernetes'
/// podautoscaler controller runs it every 15 s for an AverageValue external metric: the raw
/// recommendation with the 10 % tolerance, the stabilization windows, then the policies' limits
/// over their periods, then minimum and maximum.
struct Hpa {
    trigger_threshold: f64,
    min: u32,
    max: u32,
    behavior: Behavior,
    replicas: u32,
    /// (time, raw recommendation)
    recommendations: Vec<(u64, u32)>,
    /// (time, change in replicas)
    events: Vec<(u64, i64)>,
}

const HPA_SYNC_SECS: u64 = 15;
const HPA_TOLERANCE: f64 = 0.1;

impl Hpa {
    fn new(trigger: &Trigger, replicas: u32) -> Self {
        Self {
            trigger_threshold: trigger.threshold,
            min: trigger.min,
            max: trigger.max,
            behavior: trigger.behavior.clone(),
            replicas,
            recommendations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The replicas the metric alone asks for, from `current` replicas.
    fn raw(threshold: f64, value: f64, current: u32) -> u32 {
        let ratio = value / (threshold * f64::from(current));
        if (1.0 - ratio).abs() <= HPA_TOLERANCE {
            current
        } else {
            (value / threshold).ceil() as u32
        }
    }

    fn changed_within(&self, now: u64, period: u64, up: bool) -> i64 {
        self.events
            .iter()
            .filter(|(at, change)| now - at < period && (*change > 0) == up)
            .map(|(_, change)| change.abs())
            .sum()
    }

    /// One sync at `now` (seconds) with the metric at `value`; returns the replicas after it.
    fn sync(&mut self, now: u64, value: f64) -> u32 {
        let current = self.replicas;
        let raw = Self::raw(self.trigger_threshold, value, current);
        // Stabilization: up to the lowest recommendation of the up window, down to the highest of
        // the down window.
        let (mut up, mut down) = (raw, raw);
        for &(at, rec) in &self.recommendations {
            if now - at < self.behavior.up.window {
                up = up.min(rec);
            }
            if now - at < self.behavior.down.window {
                down = down.max(rec);
            }
        }
        self.recommendations.push((now, raw));
        let mut desired = current;
        if desired < up {
            desired = up;
        }
        if desired > down {
            desired = down;
        }
        // The policies' limits over their periods, then min and max.
        if desired > current {
            let rules = &self.behavior.up;
            let mut limit = if rules.select_max { 0 } else { u32::MAX };
            for p in &rules.policies {
                let start = (i64::from(current) - self.changed_within(now, p.period, true)) as f64;
                let proposed = if p.pods {
                    start + p.value
                } else {
                    (start * (1.0 + p.value / 100.0)).ceil()
                } as u32;
                limit = if rules.select_max {
                    limit.max(proposed)
                } else {
                    limit.min(proposed)
                };
            }
            desired = desired.min(limit.max(current)).min(self.max);
        } else if desired < current {
            let rules = &self.behavior.down;
            let mut limit = if rules.select_max { u32::MAX } else { 0 };
            for p in &rules.policies {
                let start = (i64::from(current) + self.changed_within(now, p.period, false)) as f64;
                let proposed = if p.pods {
                    (start - p.value).max(0.0)
                } else {
                    (start * (1.0 - p.value / 100.0)).floor()
                } as u32;
                limit = if rules.select_max {
                    limit.min(proposed)
                } else {
                    limit.max(proposed)
                };
            }
            desired = desired.max(limit.min(current)).max(self.min);
        }
        desired = desired.clamp(self.min, self.max);
        if desired != current {
            self.events
                .push((now, i64::from(desired) - i64::from(current)));
            self.replicas = desired;
        }
        desired
    }
}

/// The query's `+ N`: the headroom, in calls.
fn headroom_of(query: &str) -> f64 {
    query
        .rsplit_once('+')
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0.0)
}

/// An instant query through Prometheus' HTTP API: the single value it returns, or None when empty.
async fn instant(prometheus: &PrometheusServer, query: &str) -> Option<f64> {
    let body = client()
        .get(format!("{}/api/v1/query", prometheus.url()))
        .query(&[("query", query)])
        .send()
        .await
        .expect("query Prometheus")
        .text()
        .await
        .expect("Prometheus' answer");
    let response: Value = serde_json::from_str(&body).expect("Prometheus JSON");
    assert_eq!(response["status"], "success", "{query}: {response}");
    let result = response["data"]["result"].as_array()?;
    assert!(
        result.len() <= 1,
        "{query} gave {} series: {response}",
        result.len()
    );
    result.first()?["value"][1].as_str()?.parse().ok()
}

/// For a table of live-call counts, the replicas the trigger asks for: the manifest's query and
/// threshold, evaluated by a real Prometheus scraping three real replicas (each exports the
/// cluster's live calls, so the query's max() is the cluster figure and a sum() would be three
/// times it); then the pace at which the manifest's behavior scales up and back down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_asks_for_live_calls_plus_headroom_over_calls_per_replica() {
    let trigger = trigger();
    let prometheus_bin = find_prometheus().expect(
        "no prometheus binary: install Debian's prometheus package (it brings promtool too; \
         .ci/run does), or set PROMETHEUS=/path/to/prometheus",
    );
    let service = object("Service", "prosaas-calls");
    let namespace = service["metadata"]["namespace"].as_str().unwrap();
    let job = service["metadata"]["name"].as_str().unwrap();
    let redis = RedisServer::start_tcp().expect("redis-server");
    let mut env = pod_env(&redis, 5_000);
    // Webhooks only: each admitted call holds its reservation for the whole test.
    env.push(("RESERVATION_SECS".into(), "600".into()));
    let pods: Vec<ReplicaProcess> = (1..=3)
        .map(|i| spawn_pod(&format!("calls-{i}"), &env))
        .collect();
    let prometheus = PrometheusServer::start(
        &prometheus_bin,
        &[ScrapeJob {
            // What the ServiceMonitor gives every series: job = the Service, namespace = its own.
            name: job.to_owned(),
            labels: vec![("namespace".into(), namespace.to_owned())],
            targets: pods
                .iter()
                .map(|p| format!("127.0.0.1:{}", p.port))
                .collect(),
        }],
        Duration::from_millis(500),
    )
    .expect("prometheus");
    let selector = format!("calls_cluster_active{{namespace=\"{namespace}\",job=\"{job}\"}}");
    let headroom = headroom_of(&trigger.query);

    let mut admitted = 0u64;
    let mut table = Vec::new();
    for live in [0u64, 1, 100, 199, 200, 201, 399, 400, 401, 950, 3_700] {
        let urls: Vec<String> = pods.iter().map(|p| p.url("/twilio/voice")).collect();
        for batch in (admitted..live).collect::<Vec<_>>().chunks(200) {
            let posted = batch.iter().map(|&n| {
                let url = urls[n as usize % urls.len()].clone();
                async move { voice_at(&url, &sid(500_000 + n as usize)).await.0 }
            });
            for status in futures_util::future::join_all(posted).await {
                assert_eq!(status, 200);
            }
        }
        admitted = live;
        assert_eq!(active_count(&redis).await, live);
        // Every replica scraped since: each of the three exports the cluster's count.
        let scraped = eventually(Duration::from_secs(20), || async {
            (instant(&prometheus, &format!("count({selector} == {live})")).await == Some(3.0))
                .then_some(())
        })
        .await;
        assert!(
            scraped.is_some(),
            "the replicas never all exported {live}: {}",
            prometheus.log()
        );
        let value = instant(&prometheus, &trigger.query)
            .await
            .expect("the manifest's query returns a value");
        assert_eq!(
            value,
            live as f64 + headroom,
            "the query must give the cluster's live calls plus the headroom, once"
        );
        let replicas = ((value / trigger.threshold).ceil() as u32).clamp(trigger.min, trigger.max);
        table.push((live, value, replicas));
    }
    eprintln!(
        "autoscaling: query `{}`, threshold {}, replicas {}..{}",
        trigger.query, trigger.threshold, trigger.min, trigger.max
    );
    eprintln!("  live calls | query value | replicas asked");
    for (live, value, replicas) in &table {
        eprintln!("  {live:>10} | {value:>11} | {replicas:>14}");
        let expected = ((*live as f64 + headroom) / trigger.threshold).ceil() as u32;
        assert_eq!(*replicas, expected.clamp(trigger.min, trigger.max));
    }

    // The pace, from the manifest's behavior: 950 live calls arrive at once, stay 20 minutes, then
    // end at once; the HPA syncs every 15 s.
    let value_at = |live: u64| table.iter().find(|(l, _, _)| *l == live).unwrap().1;
    let (busy, quiet) = (value_at(950), value_at(0));
    let mut hpa = Hpa::new(&trigger, trigger.min);
    let mut timeline = Vec::new();
    let (peak_ends, horizon) = (20 * 60, 60 * 60);
    let mut now = 0;
    while now <= horizon {
        let before = hpa.replicas;
        let after = hpa.sync(now, if now < peak_ends { busy } else { quiet });
        if after != before {
            timeline.push((now, before, after));
        }
        now += HPA_SYNC_SECS;
    }
    eprintln!("  scale-up and scale-down with 950 live calls from 0 s to {peak_ends} s:");
    for (at, before, after) in &timeline {
        eprintln!("    at {at:>5} s: {before} -> {after} replicas");
    }
    let peak = ((busy / trigger.threshold).ceil() as u32).clamp(trigger.min, trigger.max);
    let ups: Vec<_> = timeline.iter().filter(|(_, b, a)| a > b).collect();
    let downs: Vec<_> = timeline.iter().filter(|(_, b, a)| a < b).collect();
    assert_eq!(ups.last().unwrap().2, peak, "the peak is reached");
    assert!(
        ups.last().unwrap().0 <= 2 * HPA_SYNC_SECS,
        "scale-up at once: {ups:?}"
    );
    assert!(
        downs.iter().all(|(_, b, a)| b - a == 1),
        "one pod at a time: {downs:?}"
    );
    let period = trigger.behavior.down.policies[0].period;
    assert!(
        downs.windows(2).all(|w| w[1].0 - w[0].0 >= period),
        "at most one pod every {period} s: {downs:?}"
    );
    // The last sync that saw the calls; the first scale-down waits a whole window after it.
    let last_busy = (peak_ends - 1) / HPA_SYNC_SECS * HPA_SYNC_SECS;
    assert!(
        downs[0].0 >= last_busy + trigger.behavior.down.window,
        "no scale-down before the stabilization window: {downs:?}"
    );
    assert_eq!(downs.last().unwrap().2, trigger.min, "back to the minimum");
    eprintln!(
        "  back from {peak} to {} replicas {} s after the calls ended",
        trigger.min,
        downs.last().unwrap().0 - peak_ends
    );
    drop(pods);
}

// ---- Configuration: every variable of `serve` reaches the pods, or is left out on purpose

/// `KEY=value` lines of an env file (comments and blank lines skipped).
fn env_file_keys(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=value").0.to_owned())
        .collect()
}

/// Every variable `prosaas-calls serve --help` lists is set by the manifests (the ConfigMap, the
/// Deployment's env, or the Secret template) or named in base/config.env as left out, with its
/// reason; and the manifests set no variable the service does not read, but the Secret's slots
/// for variables a later version reads (none today).
#[test]
fn every_serve_variable_is_configured_or_left_out_on_purpose() {
    const FUTURE_SECRETS: &[&str] = &[];
    let help = std::process::Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let served: std::collections::BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split([']', '=']).next().unwrap().to_owned())
        .collect();
    assert!(served.len() > 20, "{help}");

    let root = env!("CARGO_MANIFEST_DIR");
    let config_env = format!("{root}/deploy/kubernetes/base/config.env");
    let config = env_file_keys(&config_env);
    let secrets = env_file_keys(&format!(
        "{root}/deploy/kubernetes/overlays/production/secrets.env.example"
    ));
    let deployment =
        std::fs::read_to_string(format!("{root}/deploy/kubernetes/base/deployment.yaml")).unwrap();
    let deployment: Value = serde_norway::from_str(&deployment).unwrap();
    let literal: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    let left_out: Vec<(String, String)> = std::fs::read_to_string(&config_env)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("# left-out: "))
        .map(|l| {
            let (name, reason) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_owned(), reason.trim().to_owned())
        })
        .collect();
    for (name, reason) in &left_out {
        assert!(!reason.is_empty(), "{name} is left out without a reason");
    }

    let mut problems = Vec::new();
    for var in &served {
        let places = [
            config.contains(var),
            literal.contains(var),
            secrets.contains(var),
            left_out.iter().any(|(n, _)| n == var),
        ];
        match places.iter().filter(|&&p| p).count() {
            1 => {}
            0 => problems.push(format!(
                "{var}: not in the ConfigMap, the Deployment, the Secret, nor left out"
            )),
            _ => problems.push(format!("{var}: set in more than one place: {places:?}")),
        }
    }
    for var in config.iter().chain(&literal).chain(&secrets) {
        if !served.contains(var) && !FUTURE_SECRETS.contains(&var.as_str()) {
            problems.push(format!(
                "{var}: set by the manifests, but serve does not read it"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
