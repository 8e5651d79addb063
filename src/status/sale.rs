//! SaleIntact: does Redis still hold the sale the operator started? What to do about it, and the
//! condition (pure; the controller's observe stage reads Redis and carries the step out).
//!
//! A sale is started once per id (the simulator Job's settings hash, `render::simulator`): the
//! operator deletes the sale's keys, sets the stock and writes the marker (`sale::marker`), and keeps
//! the marker in `status.startedSale`. A Redis that no longer holds that marker has lost the sale.
//! The operator never starts the same sale again on its own: the units already sold could be sold
//! twice. A new id (the user raised `spec.saleRun`, or changed the stock or a simulator setting)
//! starts a fresh sale.

use crate::crd::StartedSale;
use crate::sale::marker::SaleMarker;
use crate::status::Check;

/// Reasons of the SaleIntact condition (next to `reason::WAITING_FOR_REDIS` and `reason::DISABLED`).
pub const INTACT: &str = "Intact";
pub const SALE_LOST: &str = "SaleLost";

/// The sale a store asks for: its id and stock (`None`: the simulator is off, the sale is the user's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedSale {
    pub id: String,
    pub stock: i64,
}

/// What to do about the sale, from what the store asks for, what the status says was started and what
/// Redis holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaleStep {
    /// The simulator is off: the operator starts no sale and watches none.
    Off,
    /// Redis holds the sale that was started.
    Intact(StartedSale),
    /// Redis holds the wanted sale but the status does not say so yet (its write was lost): record it.
    Record(StartedSale),
    /// Start the wanted sale: a new store, or the user asked for a fresh sale.
    Start(WantedSale),
    /// A sale started by an earlier operator version, before markers: mark it as the wanted sale
    /// without touching it.
    Adopt(WantedSale),
    /// Redis no longer holds the sale that was started: `held` is what it holds instead.
    Lost { started: StartedSale, held: Option<SaleMarker> },
}

/// The store's facts `plan` needs beside the marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Legacy {
    /// The status names the wanted sale's Job, written by an operator that knew no markers.
    pub job_of_wanted_sale: bool,
    /// Redis has a `product` key.
    pub product_exists: bool,
}

pub fn plan(
    wanted: Option<&WantedSale>,
    started: Option<&StartedSale>,
    held: Option<&SaleMarker>,
    legacy: Legacy,
) -> SaleStep {
    let Some(wanted) = wanted else { return SaleStep::Off };
    match (started, held) {
        (Some(s), Some(h)) if s.id == wanted.id && h.id == s.id && h.nonce == s.nonce => SaleStep::Intact(s.clone()),
        (Some(s), held) if s.id == wanted.id => SaleStep::Lost { started: s.clone(), held: held.cloned() },
        (_, Some(h)) if h.id == wanted.id => SaleStep::Record(StartedSale::from(h)),
        (None, None) if legacy.job_of_wanted_sale && legacy.product_exists => SaleStep::Adopt(wanted.clone()),
        _ => SaleStep::Start(wanted.clone()),
    }
}

impl From<&SaleMarker> for StartedSale {
    fn from(m: &SaleMarker) -> Self {
        let at = k8s_openapi::jiff::Timestamp::from_millisecond(m.started_at_ms)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| m.started_at_ms.to_string());
        StartedSale { id: m.id.clone(), nonce: m.nonce.clone(), stock: m.stock, started_at: at }
    }
}

/// The SaleIntact condition for a sale that Redis holds.
pub fn intact(s: &StartedSale) -> Check {
    Check::ok(INTACT, format!("Redis holds sale {} (started {}, {} units)", s.id, s.started_at, s.stock))
}

/// The SaleIntact condition for a lost sale: what was lost, what Redis holds instead, and the way to a
/// fresh sale.
pub fn lost(started: &StartedSale, held: Option<&SaleMarker>, namespace: &str, store: &str, run: u32) -> Check {
    let instead = match held {
        None => "it holds no sale (no popup:sale marker): Redis came back without its data (an emptyDir \
                 after the pod was replaced, a new volume) or the sale's keys were deleted"
            .to_string(),
        Some(h) => format!(
            "it holds sale {} (started {}) instead: its data was replaced (a restore, or a sale set up by hand)",
            h.id,
            StartedSale::from(h).started_at
        ),
    };
    let next = run.checked_add(1).unwrap_or(0);
    Check::not(
        SALE_LOST,
        format!(
            "Redis no longer holds sale {} (started {}, {} units): {instead}. That sale's stock, queues and \
             results are gone; the operator does not start it again by itself, as units already sold could be \
             sold twice. To start a fresh sale: kubectl -n {namespace} patch popupstore {store} --type merge -p \
             '{{\"spec\":{{\"saleRun\":{next}}}}}'",
            started.id, started.started_at, started.stock
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(id: &str) -> WantedSale {
        WantedSale { id: id.into(), stock: 100 }
    }
    fn marker(id: &str, nonce: &str) -> SaleMarker {
        SaleMarker { id: id.into(), nonce: nonce.into(), stock: 100, started_at_ms: 1_800_000_000_000 }
    }
    fn started(id: &str, nonce: &str) -> StartedSale {
        StartedSale::from(&marker(id, nonce))
    }
    const NONE: Legacy = Legacy { job_of_wanted_sale: false, product_exists: false };

    #[test]
    fn a_new_store_starts_its_sale_and_then_finds_it_intact() {
        assert_eq!(plan(Some(&wanted("a")), None, None, NONE), SaleStep::Start(wanted("a")));
        let s = started("a", "n1");
        assert_eq!(plan(Some(&wanted("a")), Some(&s), Some(&marker("a", "n1")), NONE), SaleStep::Intact(s.clone()));
        assert_eq!(s.started_at, "2027-01-15T08:00:00Z");
    }

    #[test]
    fn a_redis_without_the_marker_or_with_another_start_has_lost_the_sale() {
        let s = started("a", "n1");
        assert_eq!(plan(Some(&wanted("a")), Some(&s), None, NONE), SaleStep::Lost { started: s.clone(), held: None });
        let other = marker("a", "n2");
        assert_eq!(
            plan(Some(&wanted("a")), Some(&s), Some(&other), NONE),
            SaleStep::Lost { started: s.clone(), held: Some(other) },
            "the same id started again elsewhere is not this sale"
        );
        let legacy = Legacy { job_of_wanted_sale: true, product_exists: true };
        assert!(matches!(plan(Some(&wanted("a")), Some(&s), None, legacy), SaleStep::Lost { .. }), "never adopted");
    }

    #[test]
    fn a_new_id_starts_a_fresh_sale_whatever_redis_holds() {
        let s = started("a", "n1");
        for held in [None, Some(marker("a", "n1")), Some(marker("c", "n3"))] {
            assert_eq!(plan(Some(&wanted("b")), Some(&s), held.as_ref(), NONE), SaleStep::Start(wanted("b")));
        }
    }

    #[test]
    fn a_start_whose_status_write_was_lost_is_recorded_not_repeated() {
        let held = marker("b", "n9");
        assert_eq!(plan(Some(&wanted("b")), None, Some(&held), NONE), SaleStep::Record(StartedSale::from(&held)));
        assert_eq!(
            plan(Some(&wanted("b")), Some(&started("a", "n1")), Some(&held), NONE),
            SaleStep::Record(StartedSale::from(&held))
        );
    }

    #[test]
    fn a_sale_of_an_earlier_operator_is_adopted_untouched() {
        let both = Legacy { job_of_wanted_sale: true, product_exists: true };
        assert_eq!(plan(Some(&wanted("a")), None, None, both), SaleStep::Adopt(wanted("a")));
        let no_product = Legacy { product_exists: false, ..both };
        assert_eq!(plan(Some(&wanted("a")), None, None, no_product), SaleStep::Start(wanted("a")));
        let other_job = Legacy { job_of_wanted_sale: false, ..both };
        assert_eq!(plan(Some(&wanted("a")), None, None, other_job), SaleStep::Start(wanted("a")));
    }

    #[test]
    fn no_simulator_no_sale_to_watch() {
        assert_eq!(plan(None, Some(&started("a", "n1")), None, NONE), SaleStep::Off);
    }

    #[test]
    fn a_lost_sale_says_what_was_lost_and_how_to_start_a_fresh_one() {
        let c = lost(&started("a", "n1"), None, "shop", "demo", 4);
        assert!(!c.ok);
        assert_eq!(c.reason, SALE_LOST);
        for part in [
            "Redis no longer holds sale a (started 2027-01-15T08:00:00Z, 100 units)",
            "no popup:sale marker",
            "does not start it again by itself",
            r#"kubectl -n shop patch popupstore demo --type merge -p '{"spec":{"saleRun":5}}'"#,
        ] {
            assert!(c.message.contains(part), "{part:?} in {}", c.message);
        }
        let c = lost(&started("a", "n1"), Some(&marker("z", "n2")), "shop", "demo", 0);
        assert!(c.message.contains("it holds sale z (started 2027-01-15T08:00:00Z) instead"), "{}", c.message);
    }
}
