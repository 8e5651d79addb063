//! Every helper the integration tests share. Each test crate includes this module the same way, as
//! `pub mod support;`, and names what it uses by its submodule (`support::redis_server::RedisServer`).
//! `pub` matters: rustc counts the public items of a crate root's public modules as used, so a crate that
//! needs only Redis is not warned about the control-plane helpers it leaves alone, while a private helper
//! nobody calls still is.

/// A store's Redis ACL users as `render::acl` makes them, on a real Redis.
pub mod acl_users;
/// The e2e harness: a namespace per test on a shared control plane, the operator in-process with the
/// chart's RBAC, "kubelet" helpers, the audit log.
pub mod cluster;
/// etcd, kube-apiserver and kube-controller-manager as processes.
pub mod control_plane;
/// The dashboard in headless Chromium: panels, legends, panel errors.
pub mod dashboard_page;
/// The stand-ins for the controller's Redis and Grafana gateways.
pub mod fakes;
/// Waiting until a check holds, with a deadline.
pub mod poll;
/// A real redis-stack-server (or RedisGears 1 runtime) per test, and the gears emulation.
pub mod redis_server;
/// Waiting on a store in the e2e tests: conditions, pods, its simulator Job, its children.
pub mod store;
/// A folder of the test's own, removed when dropped.
pub mod temp_dir;
