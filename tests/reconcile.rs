//! Reconcile branches against an in-memory API server (kube-rs tower-test pattern).
//!
//! The fake server stores what the operator applies and answers reads from it, and records every
//! request, so a test can say "this reconcile wrote nothing". The real API server is exercised by the
//! control-plane tests; this one is about the controller's decisions.

pub mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use popup_operator::controller::{self, Config, Context, RedisProblem};
use popup_operator::crd::{Engine, PopUpStore, PopUpStoreSpec, SaleStatus, SecretKeyRef};
use popup_operator::render::acl::password_hash;
use popup_operator::sale::marker::SaleMarker;
use popup_operator::status::grafana::{Answers, Reply, Round};
use popup_operator::status::{self, reason};
use popup_operator::telemetry::Health;
use serde_json::{Value, json};
use support::fakes::{FakeGrafana, FakeRedis};

const NS: &str = "sales";
const STORE_PATH: &str = "/apis/popup.dev/v1alpha1/namespaces/sales/popupstores/shop";

/// The in-memory API server: objects by path, and the log of requests.
#[derive(Default)]
struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    log: Mutex<Vec<(Method, String)>>,
    next_rv: Mutex<u64>,
}

impl FakeApi {
    fn put(&self, path: &str, mut obj: Value) -> Value {
        let mut rv = self.next_rv.lock().unwrap();
        *rv += 1;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        self.objects.lock().unwrap().insert(path.to_string(), obj.clone());
        obj
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.lock().unwrap();
        f(objects.get_mut(path).unwrap_or_else(|| panic!("no object at {path}")));
    }

    fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.objects.lock().unwrap().keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// Requests since the log was last taken.
    fn take_log(&self) -> Vec<(Method, String)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        self.log.lock().unwrap().push((method.clone(), path.clone()));
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap() };
        let (code, reply) = match method {
            // A collection read (list) always carries query parameters; a single-object read does not.
            Method::GET if query.contains("labelSelector") || query.contains("limit") => {
                (StatusCode::OK, self.list(&path))
            }
            Method::GET => match self.get(&path) {
                Some(obj) => (StatusCode::OK, obj),
                None => not_found(&path),
            },
            Method::PATCH if path.ends_with("/status") => {
                let owner = path.trim_end_matches("/status").to_string();
                match self.get(&owner) {
                    Some(mut obj) => {
                        obj["status"] = body["status"].clone();
                        (StatusCode::OK, self.put(&owner, obj))
                    }
                    None => not_found(&owner),
                }
            }
            Method::PATCH => {
                let mut obj = body;
                // Server-side apply keeps what others wrote to status.
                if let Some(old) = self.get(&path) {
                    obj["status"] = old["status"].clone();
                    obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
                }
                (StatusCode::OK, self.put(&path, obj))
            }
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or("event").to_string();
                let full = format!("{path}/{name}");
                if !path.contains("/events") && self.get(&full).is_some() {
                    (
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
                    )
                } else {
                    (StatusCode::CREATED, self.put(&full, body))
                }
            }
            Method::DELETE => {
                self.objects.lock().unwrap().remove(&path);
                (StatusCode::OK, json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}))
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        };
        Response::builder().status(code).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap()
    }

    fn list(&self, path: &str) -> Value {
        let items: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.rsplit_once('/').map(|(dir, _)| dir) == Some(path))
            .map(|(_, v)| v.clone())
            .collect();
        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
    }
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
    )
}

struct Harness {
    api: Arc<FakeApi>,
    redis: Arc<FakeRedis>,
    grafana: Arc<FakeGrafana>,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(redis_address: Option<&str>) -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = Arc::new(FakeApi::default());
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                send.send_response(server.handle(req).await);
            }
        });
        let client = Client::new(service, NS);
        let redis = Arc::new(FakeRedis::default());
        let config = Config {
            operator_image: "example/popup-operator:test".into(),
            redis_address_template: redis_address.map(String::from),
            operator_pods: None,
            rotation_grace: Duration::from_secs(120),
            grafana_address_template: None,
        };
        let grafana = Arc::new(FakeGrafana::default());
        let ctx = Arc::new(Context::new(client, redis.clone(), grafana.clone(), Health::default(), config));
        Self { api, redis, grafana, ctx }
    }

    fn create_store(&self, edit: impl FnOnce(&mut PopUpStoreSpec)) {
        let mut spec: PopUpStoreSpec = serde_json::from_value(json!({})).unwrap();
        edit(&mut spec);
        let mut store = PopUpStore::new("shop", spec);
        store.metadata.namespace = Some(NS.into());
        store.metadata.generation = Some(1);
        self.api.put(STORE_PATH, serde_json::to_value(store).unwrap());
    }

    fn store(&self) -> PopUpStore {
        serde_json::from_value(self.api.get(STORE_PATH).unwrap()).unwrap()
    }

    async fn reconcile(&self) -> Action {
        controller::reconcile(Arc::new(self.store()), self.ctx.clone()).await.expect("reconcile succeeds")
    }

    fn condition(&self, type_: &str) -> (String, String) {
        let s = self.store();
        let c = status::find(s.status.as_ref(), type_).unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.clone(), c.reason.clone())
    }

    /// A store of `edit`'s spec, reconciled once (its children applied), whose pods then became ready.
    async fn create_ready_store(&self, edit: impl FnOnce(&mut PopUpStoreSpec)) {
        self.create_store(edit);
        self.reconcile().await;
        self.pods_become_ready();
    }

    /// Plays kubelet: the StatefulSet and Deployments report ready pods.
    fn pods_become_ready(&self) {
        self.api.edit(&format!("/apis/apps/v1/namespaces/{NS}/statefulsets/shop-redis"), |o| {
            o["status"] = json!({"replicas": 1, "readyReplicas": 1})
        });
        for path in self.api.paths_under(&format!("/apis/apps/v1/namespaces/{NS}/deployments/")) {
            self.api.edit(&path, |o| o["status"] = json!({"replicas": 1, "availableReplicas": 1}));
        }
    }
}

fn writes(log: &[(Method, String)]) -> Vec<String> {
    log.iter().filter(|(m, p)| *m != Method::GET && !p.contains("/events")).map(|(m, p)| format!("{m} {p}")).collect()
}

fn events(log: &[(Method, String)]) -> usize {
    log.iter().filter(|(m, p)| *m == Method::POST && p.contains("/events")).count()
}

#[tokio::test]
async fn first_reconcile_applies_every_child_in_dependency_order_and_waits_for_redis() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    let action = h.reconcile().await;
    let log = h.api.take_log();
    let w = writes(&log);
    let expected = [
        "PATCH /api/v1/namespaces/sales/secrets/shop-redis",
        "PATCH /api/v1/namespaces/sales/secrets/shop-redis-acl",
        "PATCH /api/v1/namespaces/sales/secrets/shop-redis-grafana",
        "PATCH /api/v1/namespaces/sales/secrets/shop-redis-simulator",
        "PATCH /api/v1/namespaces/sales/secrets/shop-grafana",
        "PATCH /api/v1/namespaces/sales/configmaps/shop-scripts",
        "PATCH /api/v1/namespaces/sales/configmaps/shop-grafana-provisioning",
        "PATCH /api/v1/namespaces/sales/configmaps/shop-grafana-dashboards",
        "PATCH /api/v1/namespaces/sales/services/shop-redis-headless",
        "PATCH /api/v1/namespaces/sales/services/shop-redis",
        "PATCH /api/v1/namespaces/sales/services/shop-grafana",
        "PATCH /apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-redis",
        "PATCH /apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-grafana",
        "PATCH /apis/apps/v1/namespaces/sales/statefulsets/shop-redis",
        "PATCH /apis/apps/v1/namespaces/sales/deployments/shop-grafana",
        "PATCH /apis/popup.dev/v1alpha1/namespaces/sales/popupstores/shop/status",
    ];
    assert_eq!(w, expected);
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(30)),
        "waiting for pods: the watches bring the news, requeue is a safety net"
    );
    assert_eq!(h.condition(status::REDIS_READY), ("False".into(), reason::STARTING.into()));
    assert_eq!(h.condition(status::SCRIPTS_LOADED), ("False".into(), reason::WAITING_FOR_REDIS.into()));
    assert_eq!(h.condition(status::READY).0, "False");
    assert!(h.redis.targets.lock().unwrap().is_empty(), "Redis is not contacted before its pod is ready");
    // Every condition starts out on its way (Starting, WaitingForRedis…): no news, no Event.
    assert_eq!(events(&log), 0, "a new store's first status publishes no Event");
    // The password was generated once, into the Secret, and is reused afterwards.
    let secret = h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").unwrap();
    assert!(secret["data"]["password"].as_str().unwrap().len() >= 40, "base64 of 32 characters");
    let status = h.store().status.unwrap();
    assert_eq!(status.endpoints.unwrap().redis, "shop-redis.sales.svc:6379");
}

#[tokio::test]
async fn ready_store_loads_scripts_starts_the_simulator_then_goes_quiet() {
    let h = Harness::new(Some("127.0.0.1:16379"));
    h.create_store(|_| {});
    h.reconcile().await;
    let password = h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").unwrap()["data"]["password"].clone();
    h.pods_become_ready();
    h.api.take_log();

    h.reconcile().await;
    let w = writes(&h.api.take_log());
    assert_eq!(w.len(), 2, "only the Job and the status are written: {w:?}");
    assert!(w[0].starts_with("POST /apis/batch/v1/namespaces/sales/jobs"), "{w:?}");
    assert_eq!(h.condition(status::READY), ("True".into(), reason::ALL_COMPONENTS_READY.into()));
    assert_eq!(h.condition(status::SCRIPTS_LOADED), ("True".into(), reason::LOADED.into()));
    assert_eq!(h.condition(status::SIMULATION_COMPLETE), ("False".into(), reason::RUNNING.into()));
    let target = h.redis.targets.lock().unwrap()[0].clone();
    assert_eq!(target.address, "127.0.0.1:16379", "the documented address override is used");
    assert!(!target.password.is_empty());
    // The operator started the sale (stock 10000, the default) before the Job: what it left is shown.
    assert_eq!(h.store().status.unwrap().sale.unwrap().available, Some(10000));
    assert_eq!(h.condition(status::SALE_INTACT), ("True".into(), reason::INTACT.into()));
    let started = h.store().status.unwrap().started_sale.unwrap();
    assert_eq!(started.stock, 10000);
    assert!(
        w[0].ends_with(&started.id)
            || h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/")[0]
                .ends_with(&format!("shop-simulator-{}", started.id)),
        "the Job is named after its sale"
    );
    assert_eq!(
        h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").unwrap()["data"]["password"],
        password,
        "password kept"
    );

    // Nothing changed: the next reconcile only reads.
    let action = h.reconcile().await;
    let log = h.api.take_log();
    assert_eq!(writes(&log), Vec::<String>::new(), "a no-op reconcile writes nothing");
    assert_eq!(events(&log), 0);
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(5)),
        "while the simulation runs, status follows the metrics interval"
    );

    // The sale moves: only the status is written.
    h.redis.sale.lock().unwrap().completed = 4;
    h.reconcile().await;
    assert_eq!(writes(&h.api.take_log()), [format!("PATCH {STORE_PATH}/status")]);
    assert_eq!(h.store().status.unwrap().sale.unwrap().completed, 4);

    // The Job finishes.
    let job = h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/")[0].clone();
    h.api.edit(&job, |o| o["status"] = json!({"succeeded": 1}));
    let action = h.reconcile().await;
    assert_eq!(h.condition(status::SIMULATION_COMPLETE), ("True".into(), reason::SUCCEEDED.into()));
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn deleted_child_is_recreated() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    h.reconcile().await;
    h.api.objects.lock().unwrap().remove("/api/v1/namespaces/sales/services/shop-redis");
    h.api.take_log();
    h.reconcile().await;
    let w = writes(&h.api.take_log());
    assert_eq!(w, ["PATCH /api/v1/namespaces/sales/services/shop-redis"]);
}

#[tokio::test]
async fn changed_simulator_settings_replace_the_job() {
    let h = Harness::new(None);
    h.create_ready_store(|_| {}).await;
    h.reconcile().await;
    let jobs = h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/");
    assert_eq!(jobs.len(), 1);
    h.api.edit(STORE_PATH, |o| {
        o["spec"]["simulator"]["ratePerSecond"] = json!(500);
        o["metadata"]["generation"] = json!(2);
    });
    h.api.take_log();
    h.reconcile().await;
    let w = writes(&h.api.take_log());
    let after = h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/");
    assert_eq!(after.len(), 1, "old Job removed: {w:?}");
    assert_ne!(after, jobs);
    assert!(w.iter().any(|l| l.starts_with("DELETE") && l.ends_with(jobs[0].rsplit('/').next().unwrap())), "{w:?}");
    assert_eq!(h.store().status.unwrap().observed_generation, Some(2));
}

/// A ready store whose sale runs: (the sale's id, the Job's path).
async fn selling(h: &Harness) -> (String, String) {
    h.create_ready_store(|_| {}).await;
    h.reconcile().await;
    let id = h.store().status.unwrap().started_sale.unwrap().id;
    let job = h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/")[0].clone();
    h.api.take_log();
    (id, job)
}

#[tokio::test]
async fn a_redis_that_lost_the_sale_is_reported_and_never_restocked() {
    let h = Harness::new(None);
    let (id, job) = selling(&h).await;
    // Redis came back empty: no marker, no product.
    *h.redis.marker.lock().unwrap() = None;
    *h.redis.sale.lock().unwrap() = SaleStatus::default();
    h.reconcile().await;
    let log = h.api.take_log();
    assert_eq!(h.condition(status::SALE_INTACT), ("False".into(), reason::SALE_LOST.into()));
    assert_eq!(h.condition(status::READY), ("False".into(), reason::COMPONENTS_NOT_READY.into()));
    let s = h.store();
    let lost = status::find(s.status.as_ref(), status::SALE_INTACT).unwrap();
    assert!(lost.message.contains(&format!("Redis no longer holds sale {id}")), "{}", lost.message);
    assert!(lost.message.contains(r#"'{"spec":{"saleRun":1}}'"#), "{}", lost.message);
    assert_eq!(s.status.as_ref().unwrap().started_sale.as_ref().unwrap().id, id, "the lost sale stays named");
    assert!(h.redis.marker.lock().unwrap().is_none(), "not restocked: units sold could be sold twice");
    let published = log.iter().filter(|(_, p)| p.contains("/events")).count();
    assert!(published >= 2, "SaleIntactFalse and ReadyFalse are published (new or as a series): {log:?}");
    assert!(writes(&log).iter().all(|w| !w.contains("/jobs")), "no new Job for a lost sale: {:?}", writes(&log));

    // The Job fails on it; the status quotes why, read from its pod once.
    h.api.edit(&job, |o| o["status"] = json!({"failed": 1}));
    let name = job.rsplit('/').next().unwrap().to_string();
    let said = format!("Redis at shop-redis.sales.svc:6379 no longer holds sale {id}: stopped sending");
    h.api.put(
        &format!("/api/v1/namespaces/sales/pods/{name}-x"),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("{name}-x"), "namespace": "sales", "labels": {"job-name": name}},
               "status": {"containerStatuses": [{"name": "simulator", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                          "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": said}}}]}}),
    );
    h.reconcile().await;
    let s = h.store();
    let sim = status::find(s.status.as_ref(), status::SIMULATION_COMPLETE).unwrap();
    assert_eq!(sim.reason, reason::FAILED);
    assert!(sim.message.contains(&said), "{}", sim.message);
    h.api.take_log();
    h.reconcile().await;
    let log = h.api.take_log();
    assert!(log.iter().all(|(_, p)| !p.contains("/pods")), "the cause is read once: {log:?}");
    assert_eq!(writes(&log), Vec::<String>::new());

    // A fresh sale on request: a new id, started, a new Job, the old one gone.
    h.api.edit(STORE_PATH, |o| {
        o["spec"]["saleRun"] = json!(1);
        o["metadata"]["generation"] = json!(2);
    });
    h.reconcile().await;
    let fresh = h.store().status.unwrap().started_sale.unwrap();
    assert_ne!(fresh.id, id);
    assert_eq!(h.redis.marker.lock().unwrap().as_ref().map(|m| m.id.clone()), Some(fresh.id.clone()));
    assert_eq!(h.condition(status::SALE_INTACT), ("True".into(), reason::INTACT.into()));
    assert_eq!(h.condition(status::READY).0, "True");
    let jobs = h.api.paths_under("/apis/batch/v1/namespaces/sales/jobs/");
    assert_eq!(jobs, [format!("/apis/batch/v1/namespaces/sales/jobs/shop-simulator-{}", fresh.id)]);
}

#[tokio::test]
async fn a_redis_holding_another_sale_is_not_this_one() {
    let h = Harness::new(None);
    let (id, _) = selling(&h).await;
    let other = SaleMarker { id: id.clone(), nonce: "restored".into(), stock: 5, started_at_ms: 1_700_000_000_000 };
    *h.redis.marker.lock().unwrap() = Some(other);
    h.reconcile().await;
    assert_eq!(h.condition(status::SALE_INTACT), ("False".into(), reason::SALE_LOST.into()));
    let s = h.store();
    let lost = status::find(s.status.as_ref(), status::SALE_INTACT).unwrap();
    assert!(
        lost.message.contains(&format!("it holds sale {id} (started 2023-11-14T22:13:20Z) instead")),
        "{}",
        lost.message
    );
}

#[tokio::test]
async fn a_sale_of_an_earlier_operator_is_adopted_not_restarted() {
    let h = Harness::new(None);
    h.create_ready_store(|_| {}).await;
    // What an operator without markers left: its Job in the status, a sale in Redis, no marker.
    let validated = popup_operator::render::validate(&h.store()).unwrap();
    let id = popup_operator::render::simulator::settings_hash(&validated);
    h.api.edit(STORE_PATH, |o| o["status"] = json!({"simulatorJob": format!("shop-simulator-{id}")}));
    h.redis.sale.lock().unwrap().completed = 300;
    h.reconcile().await;
    let marker = h.redis.marker.lock().unwrap().clone().expect("marked");
    assert_eq!(marker.id, id);
    assert_eq!(h.store().status.unwrap().sale.unwrap().completed, 300, "the sale was not reset");
    assert_eq!(h.condition(status::SALE_INTACT), ("True".into(), reason::INTACT.into()));
}

#[tokio::test]
async fn invalid_spec_sets_a_condition_and_waits_for_a_change() {
    let h = Harness::new(None);
    h.create_store(|s| s.stock = -5);
    let action = h.reconcile().await;
    let w = writes(&h.api.take_log());
    assert_eq!(w, [format!("PATCH {STORE_PATH}/status")], "no child is applied for a broken spec");
    assert_eq!(action, Action::await_change(), "await_change, not a hot loop");
    let s = h.store();
    let ready = status::find(s.status.as_ref(), status::READY).unwrap();
    assert_eq!(ready.reason, reason::INVALID_SPEC);
    assert!(ready.message.contains("spec.stock"), "{}", ready.message);
    // Reconciling the same broken spec again writes nothing.
    h.reconcile().await;
    assert!(writes(&h.api.take_log()).is_empty());
}

#[tokio::test]
async fn missing_user_password_secret_is_reported_not_crashed_on() {
    let h = Harness::new(None);
    h.create_store(|s| {
        s.redis.password_secret_ref = Some(SecretKeyRef { name: "mine".into(), key: "password".into() })
    });
    h.reconcile().await;
    let (st, reason) = h.condition(status::REDIS_READY);
    assert_eq!((st.as_str(), reason.as_str()), ("False", reason::PASSWORD_SECRET_MISSING));
    let msg = status::find(h.store().status.as_ref(), status::REDIS_READY).unwrap().message.clone();
    assert!(msg.contains("mine") && msg.contains("passwordSecretRef"), "{msg}");
    assert!(
        h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").is_none(),
        "no generated Secret when the user brings one"
    );

    // The user creates it: Redis can be reached with it once the pod is ready.
    h.api.put(
        "/api/v1/namespaces/sales/secrets/mine",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine", "namespace": NS}, "data": {"password": "aHVudGVyMg=="}}),
    );
    h.pods_become_ready();
    h.reconcile().await;
    assert_eq!(h.condition(status::REDIS_READY).0, "True");
    // The operator logs in as its own user; the user's password is the admin's, its way back in.
    let target = h.redis.targets.lock().unwrap()[0].clone();
    assert_eq!(
        (target.username.as_deref(), target.admin_password.as_deref()),
        (Some("popup-operator"), Some("hunter2"))
    );
}

#[tokio::test]
async fn missing_module_is_a_condition_with_a_warning_event_and_no_simulator() {
    let h = Harness::new(None);
    h.create_ready_store(|s| s.engine = Engine::Triggers).await;
    *h.redis.scripts.lock().unwrap() = Err(RedisProblem {
        reason: reason::MODULE_MISSING,
        message: "Redis at x has no RedisGears 2 module; use engine native".into(),
    });
    h.api.take_log();
    let action = h.reconcile().await;
    let log = h.api.take_log();
    assert_eq!(h.condition(status::SCRIPTS_LOADED), ("False".into(), reason::MODULE_MISSING.into()));
    assert_eq!(h.condition(status::SIMULATION_COMPLETE), ("False".into(), reason::WAITING_FOR_SCRIPTS.into()));
    assert!(h.api.paths_under("/apis/batch/v1/").is_empty());
    assert!(events(&log) >= 1);
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "a Redis-side problem is retried soon");
}

#[tokio::test]
async fn native_engine_gets_a_processor_and_waits_for_it() {
    let h = Harness::new(None);
    h.create_store(|s| {
        s.engine = Engine::Native;
        s.grafana.enabled = false;
    });
    h.reconcile().await;
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/deployments/shop-processor").is_some());
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/deployments/shop-grafana").is_none());
    assert_eq!(h.condition(status::PROCESSOR_READY).0, "False");
    h.pods_become_ready();
    h.reconcile().await;
    assert_eq!(h.condition(status::PROCESSOR_READY).0, "True");
    assert_eq!(h.condition(status::GRAFANA_READY), ("True".into(), reason::DISABLED.into()));
    assert_eq!(h.condition(status::READY).0, "True");
}

#[tokio::test]
async fn grafana_ready_comes_from_grafana_itself_asked_at_most_once_a_minute() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    h.reconcile().await;
    assert!(h.grafana.targets.lock().unwrap().is_empty(), "no pod available yet: nothing to ask");
    assert_eq!(h.condition(status::GRAFANA_READY), ("False".into(), reason::UNAVAILABLE.into()));
    // The pod is available but Grafana runs without the plugin.
    *h.grafana.round.lock().unwrap() = Round::Answered(Answers {
        plugin: Reply::new(404, r#"{"message":"Plugin not found, no installed plugin with that id"}"#),
        ..FakeGrafana::healthy()
    });
    h.pods_become_ready();
    h.reconcile().await;
    assert_eq!(h.condition(status::GRAFANA_READY), ("False".into(), reason::PLUGIN_NOT_LOADED.into()));
    assert_eq!(h.condition(status::READY).0, "False");
    let asked = h.grafana.targets.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    // As its admin, at the Service's address, about this store's datasource and dashboard.
    let admin = h.api.get("/api/v1/namespaces/sales/secrets/shop-grafana").unwrap();
    let password = String::from_utf8(base64_decode(
        admin["data"][popup_operator::render::grafana::ADMIN_PASSWORD_KEY].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(
        (asked[0].url.as_str(), asked[0].user.as_str(), asked[0].password.as_str()),
        ("http://shop-grafana.sales.svc:3000", "admin", password.as_str())
    );
    assert!(asked[0].datasource_uid.starts_with("popup-redis-") && asked[0].dashboard_uid.starts_with("popup-store-"));
    // Another reconcile right away (e.g. the sale's refresh) does not ask again.
    h.reconcile().await;
    assert_eq!(h.grafana.targets.lock().unwrap().len(), 1);
    // A new rollout of Grafana (here: its generation moves) is asked at once; now it is fine.
    *h.grafana.round.lock().unwrap() = Round::Answered(FakeGrafana::healthy());
    h.api.edit("/apis/apps/v1/namespaces/sales/deployments/shop-grafana", |o| o["metadata"]["generation"] = json!(2));
    h.reconcile().await;
    assert_eq!(h.grafana.targets.lock().unwrap().len(), 2);
    assert_eq!(h.condition(status::GRAFANA_READY), ("True".into(), reason::AVAILABLE.into()));
    assert_eq!(h.condition(status::READY).0, "True");
    // While fine, the next reconciles reuse that answer: a broken Grafana is seen within the minute.
    *h.grafana.round.lock().unwrap() = Round::Unreachable("connection refused".into());
    for _ in 0..3 {
        h.reconcile().await;
    }
    assert_eq!(h.grafana.targets.lock().unwrap().len(), 2);
    assert_eq!(h.condition(status::GRAFANA_READY).0, "True");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[tokio::test]
async fn sidecar_mode_labels_the_dashboard_for_an_existing_grafana() {
    let h = Harness::new(None);
    h.create_ready_store(|s| s.grafana.mode = popup_operator::crd::GrafanaMode::Sidecar).await;
    h.reconcile().await;
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/deployments/shop-grafana").is_none(), "no Grafana deployed");
    let ds = h.api.get("/api/v1/namespaces/sales/secrets/shop-grafana-datasource").unwrap();
    assert_eq!(ds["metadata"]["labels"]["grafana_datasource"], "1");
    let dash = h.api.get("/api/v1/namespaces/sales/configmaps/shop-grafana-dashboards").unwrap();
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(h.condition(status::GRAFANA_READY), ("True".into(), reason::SIDECAR.into()));
    assert_eq!(h.condition(status::READY).0, "True");
    assert!(h.store().status.unwrap().endpoints.unwrap().grafana.is_none());
}

#[tokio::test]
async fn a_deleted_password_secret_is_regenerated_with_a_warning() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    h.reconcile().await;
    let before = h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").unwrap()["data"]["password"].clone();
    h.api.objects.lock().unwrap().remove("/api/v1/namespaces/sales/secrets/shop-redis");
    h.reconcile().await;
    let after = h.api.get("/api/v1/namespaces/sales/secrets/shop-redis").unwrap()["data"]["password"].clone();
    assert_ne!(before, after, "a new password");
    let warnings: Vec<Value> = h
        .api
        .paths_under("/apis/events.k8s.io/v1/namespaces/sales/events/")
        .iter()
        .filter_map(|p| h.api.get(p))
        .filter(|e| e["reason"] == "RedisPasswordRegenerated")
        .collect();
    assert_eq!(warnings.len(), 1, "one warning event");
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(warnings[0]["note"].as_str().unwrap().contains("emptyDir"), "{}", warnings[0]["note"]);
}

#[tokio::test]
async fn children_the_spec_no_longer_wants_are_pruned_once() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    // The fake API server gives the store a uid; children point at it.
    h.reconcile().await;
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/deployments/shop-grafana").is_some());
    h.api.edit(STORE_PATH, |o| {
        o["spec"]["grafana"]["mode"] = json!("none");
        o["metadata"]["generation"] = json!(2);
    });
    h.api.take_log();
    h.reconcile().await;
    let w = writes(&h.api.take_log());
    for gone in [
        "/apis/apps/v1/namespaces/sales/deployments/shop-grafana",
        "/api/v1/namespaces/sales/services/shop-grafana",
        "/api/v1/namespaces/sales/secrets/shop-grafana",
        "/api/v1/namespaces/sales/configmaps/shop-grafana-provisioning",
        "/api/v1/namespaces/sales/configmaps/shop-grafana-dashboards",
        "/apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-grafana",
    ] {
        assert!(h.api.get(gone).is_none(), "{gone} still there");
        assert!(w.contains(&format!("DELETE {gone}")), "{w:?}");
    }
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/statefulsets/shop-redis").is_some());
    assert!(h.api.get("/apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-redis").is_some());
    // Settled again: no prune requests at all.
    h.reconcile().await;
    assert!(h.api.take_log().iter().all(|(m, _)| *m != Method::DELETE));
}

#[tokio::test]
async fn network_policies_go_when_turned_off_and_come_back() {
    let h = Harness::new(None);
    h.create_store(|_| {});
    h.reconcile().await;
    let redis = "/apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-redis";
    let grafana = "/apis/networking.k8s.io/v1/namespaces/sales/networkpolicies/shop-grafana";
    assert!(h.api.get(redis).is_some() && h.api.get(grafana).is_some());
    h.api.edit(STORE_PATH, |o| {
        o["spec"]["networkPolicy"] = json!({"enabled": false});
        o["metadata"]["generation"] = json!(2);
    });
    h.api.take_log();
    h.reconcile().await;
    let w = writes(&h.api.take_log());
    for gone in [redis, grafana] {
        assert!(h.api.get(gone).is_none(), "{gone} still there");
        assert!(w.contains(&format!("DELETE {gone}")), "{w:?}");
    }
    assert!(w.iter().all(|l| !l.contains("networkpolicies") || l.starts_with("DELETE")), "{w:?}");
    h.api.edit(STORE_PATH, |o| {
        o["spec"]["networkPolicy"] = json!({"enabled": true});
        o["metadata"]["generation"] = json!(3);
    });
    h.reconcile().await;
    assert!(h.api.get(redis).is_some() && h.api.get(grafana).is_some());
}

#[tokio::test]
async fn prune_never_deletes_an_object_the_store_does_not_own() {
    let h = Harness::new(None);
    h.create_store(|s| s.grafana.mode = popup_operator::crd::GrafanaMode::None);
    h.api.put(
        "/apis/apps/v1/namespaces/sales/deployments/shop-grafana",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop-grafana", "namespace": NS}}),
    );
    h.reconcile().await;
    assert!(h.api.get("/apis/apps/v1/namespaces/sales/deployments/shop-grafana").is_some(), "not ours: kept");
}

#[tokio::test]
async fn a_gears_pod_no_node_can_take_is_explained_in_the_status() {
    let h = Harness::new(None);
    h.create_store(|_| {}); // engine: gears, the default
    h.reconcile().await;
    let sts = h.api.get("/apis/apps/v1/namespaces/sales/statefulsets/shop-redis").unwrap();
    assert_eq!(sts["spec"]["template"]["spec"]["nodeSelector"], json!({"kubernetes.io/arch": "amd64"}));
    assert_eq!(h.condition(status::REDIS_READY), ("False".into(), reason::STARTING.into()), "no pod yet");

    // The StatefulSet controller made the pod and the scheduler found no amd64 node for it.
    let scheduler = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    h.api.put(
        "/api/v1/namespaces/sales/pods/shop-redis-0",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shop-redis-0", "namespace": NS},
               "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                          "reason": "Unschedulable", "message": scheduler}]}}),
    );
    h.api.take_log();
    let action = h.reconcile().await;
    let log = h.api.take_log();
    assert!(log.contains(&(Method::GET, "/api/v1/namespaces/sales/pods/shop-redis-0".into())), "{log:?}");
    assert_eq!(h.condition(status::REDIS_READY), ("False".into(), reason::UNSCHEDULABLE.into()));
    let s = h.store();
    let message = &status::find(s.status.as_ref(), status::REDIS_READY).unwrap().message;
    for words in ["gears", "amd64 only", "engine: triggers", "engine: native", scheduler] {
        assert!(message.contains(words), "{words:?} missing from: {message}");
    }
    let ready = status::find(s.status.as_ref(), status::READY).unwrap();
    assert!(ready.message.contains("amd64 only"), "the summary says it too: {}", ready.message);
    let warning = h
        .api
        .paths_under("/apis/events.k8s.io/v1/namespaces/sales/events/")
        .iter()
        .filter_map(|p| h.api.get(p))
        .find(|e| e["reason"] == "RedisReadyFalse" && e["note"].as_str().unwrap_or_default().contains("Unschedulable"))
        .expect("an event for the transition");
    assert_eq!(warning["type"], "Warning", "the user has to act");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)), "a node may join: look again");

    // An amd64 node joins: the pod runs, the explanation goes, and a ready store reads no pod.
    h.pods_become_ready();
    h.reconcile().await;
    assert_eq!(h.condition(status::REDIS_READY), ("True".into(), reason::RUNNING.into()));
    h.reconcile().await;
    assert!(h.api.take_log().iter().all(|(_, p)| !p.contains("/pods/")), "no pod read once Redis is ready");
}

#[tokio::test]
async fn a_gears_password_redis_6_would_have_misread_is_fine_as_a_hash() {
    let h = Harness::new(None);
    h.create_store(|s| {
        s.redis.password_secret_ref = Some(SecretKeyRef { name: "mine".into(), key: "password".into() })
    });
    // "--hunter2": on Redis 6.2's command line an option; it reaches Redis only as a hash in the ACL file.
    h.api.put(
        "/api/v1/namespaces/sales/secrets/mine",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine", "namespace": NS}, "data": {"password": "LS1odW50ZXIy"}}),
    );
    h.reconcile().await;
    h.pods_become_ready();
    h.reconcile().await;
    assert_eq!(h.condition(status::REDIS_READY), ("True".into(), reason::RUNNING.into()));
    let acl: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(h.api.get("/api/v1/namespaces/sales/secrets/shop-redis-acl").unwrap()).unwrap();
    let file = String::from_utf8(acl.data.unwrap()["users.acl"].0.clone()).unwrap();
    let hash = popup_operator::render::acl::password_hash("--hunter2");
    assert!(file.starts_with(&format!("user default on resetpass #{hash} ")), "{file}");
    assert!(!file.contains("hunter2"));
}

/// The hashes each user accepts, from the ACL file in `shop-redis-acl`.
fn accepted(h: &Harness) -> BTreeMap<String, Vec<String>> {
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(h.api.get("/api/v1/namespaces/sales/secrets/shop-redis-acl").unwrap()).unwrap();
    popup_operator::render::acl::parse_acl_file(std::str::from_utf8(&secret.data.unwrap()["users.acl"].0).unwrap())
}

fn pod_template(h: &Harness, path: &str) -> Value {
    h.api.get(path).unwrap()["spec"]["template"].clone()
}

#[tokio::test]
async fn a_rotated_password_stays_accepted_until_its_pods_have_rolled_out_and_redis_never_restarts() {
    let h = Harness::new(None);
    h.create_ready_store(|s| s.engine = Engine::Native).await;
    h.reconcile().await;
    let old = accepted(&h)["popup-processor"].clone();
    assert_eq!(old.len(), 1);
    let processor = "/apis/apps/v1/namespaces/sales/deployments/shop-processor";
    let redis = "/apis/apps/v1/namespaces/sales/statefulsets/shop-redis";
    let (processor_before, redis_before) = (pod_template(&h, processor), pod_template(&h, redis));

    // A new password in the processor's Secret.
    let new = json!(k8s_openapi::ByteString(b"a-new-processor-password".to_vec()));
    h.api.edit("/api/v1/namespaces/sales/secrets/shop-redis-processor", |o| o["data"]["password"] = new);
    let action = h.reconcile().await;
    let both = vec![password_hash("a-new-processor-password"), old[0].clone()];
    assert_eq!(accepted(&h)["popup-processor"], both, "the new one next to the old one, in the file");
    let live = h.redis.users.lock().unwrap().last().unwrap().clone();
    assert_eq!(live.iter().find(|u| u.name == "popup-processor").unwrap().hashes, both, "and live");
    assert_ne!(pod_template(&h, processor), processor_before, "the processor rolls onto the new password");
    assert_eq!(pod_template(&h, redis), redis_before, "Redis does not restart");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)), "the old password waits; look again soon");

    // The rollout is not done (old pods still report): the old password stays.
    h.reconcile().await;
    assert_eq!(accepted(&h)["popup-processor"], both);
    // Every pod runs the new template, no old one is left: the old password goes, in the file and live.
    h.api.edit(processor, |o| {
        o["status"] = json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1})
    });
    h.reconcile().await;
    assert_eq!(accepted(&h)["popup-processor"], [password_hash("a-new-processor-password")]);
    let live = h.redis.users.lock().unwrap().last().unwrap().clone();
    assert_eq!(live.iter().find(|u| u.name == "popup-processor").unwrap().hashes.len(), 1);
    assert_eq!(pod_template(&h, redis), redis_before, "Redis still the same");
    assert_eq!(accepted(&h)["popup-grafana"].len(), 1, "the other users were left alone");
}

#[tokio::test]
async fn redis_refusing_the_operator_is_a_redis_ready_reason_and_nothing_is_loaded() {
    let h = Harness::new(None);
    h.create_ready_store(|_| {}).await;
    *h.redis.users_result.lock().unwrap() = Err(RedisProblem {
        reason: reason::REDIS_AUTH_FAILED,
        message: "Redis at shop-redis.sales.svc:6379 rejected the credentials (WRONGPASS)".into(),
    });
    let action = h.reconcile().await;
    assert_eq!(h.condition(status::REDIS_READY), ("False".into(), reason::REDIS_AUTH_FAILED.into()));
    let msg = status::find(h.store().status.as_ref(), status::REDIS_READY).unwrap().message.clone();
    assert!(msg.starts_with("setting up the Redis users failed: ") && msg.contains("WRONGPASS"), "{msg}");
    assert!(h.redis.targets.lock().unwrap().is_empty(), "no scripts without the users");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    // Redis takes the operator again: the store recovers.
    *h.redis.users_result.lock().unwrap() = Ok(Vec::new());
    h.reconcile().await;
    assert_eq!(h.condition(status::REDIS_READY).0, "True");
}
