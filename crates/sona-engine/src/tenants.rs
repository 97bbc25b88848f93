//! Per-tenant micro-LoRAs over the shared base and router (issue 14, item 5).
//!
//! `process_tenant(x, tenant)` decides with the tenant's own pair of micro-LoRAs — the embedding
//! micro (`x + base(x) + micro_tenant(x)`) and the tier-head micro — in place of the shared pair,
//! over the shared base, router and memory; the feedback of that decision is loop A on that pair
//! only. Nothing shared moves: not the shared micro adapters, not the bank's statistics, the replay
//! reservoir or loop B's counters. So one tenant's traffic adapts its own representation and
//! cannot change another's outputs, while every tenant still gets the shared learning (loop B's
//! base and router, which tenants read).
//!
//! The map is bounded ([`MAX_TENANTS`]); adapters are created on first use (`B = 0`: a new tenant
//! starts on the shared base) and the least recently used one is evicted beyond the cap. Adapters
//! are saved in `engine.ckpt`; which open trajectory belongs to which tenant is not (like the open
//! trajectories themselves). Tenant decisions are not written to the interaction log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use sona_core::{Checkpoint, Result, SeededRng, SonaError};
use sona_lora::optim::Optimizer;
use sona_lora::LoraWeights;

use crate::config::EngineConfig;
use crate::engine::{
    fresh_lora, head_optim, micro_optim, now_ms, with_scratch, Decision, FeedbackSource, Inner,
};
use crate::model::Model;
use crate::replay::ReplayItem;

/// Most tenant adapters kept at once (least recently used evicted beyond).
pub const MAX_TENANTS: usize = 256;
/// Longest tenant name, in bytes.
pub const MAX_TENANT_NAME: usize = 256;

/// One tenant's micro-LoRAs (embedding, tier head) and their optimiser states.
pub(crate) struct Adapter {
    pub micro: Arc<LoraWeights>,
    pub opt: Optimizer,
    pub head: Arc<LoraWeights>,
    pub head_opt: Optimizer,
    last_used: u64,
}

impl Adapter {
    /// The tenant's view: its micro adapters over `shared`'s router and base.
    fn view(&self, shared: &Model) -> Model {
        Model {
            micro: self.micro.clone(),
            head: self.head.clone(),
            ..shared.clone()
        }
    }
}

#[derive(Default)]
struct State {
    adapters: HashMap<Arc<str>, Adapter>,
    /// Open tenant trajectories: id → tenant (pruned of ids no longer pending).
    owners: HashMap<u64, Arc<str>>,
    clock: u64,
}

/// The bounded tenant → adapter map.
#[derive(Default)]
pub(crate) struct Tenants {
    state: Mutex<State>,
    /// Whether any tenant decision was made: untenanted feedback skips the owner lookup until then.
    active: AtomicBool,
    pub evicted: AtomicU64,
    pub feedbacks: AtomicU64,
}

/// `tenant` must be 1..=[`MAX_TENANT_NAME`] bytes without control characters.
pub fn check_tenant(tenant: &str) -> Result<()> {
    if tenant.is_empty() || tenant.len() > MAX_TENANT_NAME || tenant.chars().any(char::is_control) {
        return Err(SonaError::invalid(format!(
            "tenant must be 1..={MAX_TENANT_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

fn new_adapter(cfg: &EngineConfig, tenant: &str, clock: u64) -> Result<Adapter> {
    // Seeded by the engine seed and the name: a tenant's fresh adapter is reproducible.
    let h = tenant.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = SeededRng::new(cfg.seed ^ h);
    let (d, r, hr) = (cfg.dim, cfg.micro_rank, cfg.head_rank());
    Ok(Adapter {
        micro: Arc::new(fresh_lora(d, d, r, cfg.micro_alpha as f32, &mut rng)?),
        opt: Optimizer::new(micro_optim(cfg), d, d, r)?,
        head: Arc::new(fresh_lora(
            cfg.hidden,
            cfg.n_tiers,
            hr,
            hr as f32,
            &mut rng,
        )?),
        head_opt: Optimizer::new(head_optim(cfg), cfg.hidden, cfg.n_tiers, hr)?,
        last_used: clock,
    })
}

impl State {
    /// The tenant's adapter, created (and the least recently used evicted) if needed.
    fn adapter(
        &mut self,
        cfg: &EngineConfig,
        tenant: &str,
        evicted: &AtomicU64,
    ) -> Result<&mut Adapter> {
        self.clock += 1;
        let clock = self.clock;
        if !self.adapters.contains_key(tenant) {
            let fresh = new_adapter(cfg, tenant, clock)?;
            if self.adapters.len() >= MAX_TENANTS {
                let oldest = self
                    .adapters
                    .iter()
                    .min_by_key(|(_, a)| a.last_used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.adapters.remove(&k);
                    evicted.fetch_add(1, Relaxed);
                }
            }
            self.adapters.insert(Arc::from(tenant), fresh);
        }
        let a = self.adapters.get_mut(tenant).expect("inserted above");
        a.last_used = clock;
        Ok(a)
    }
}

impl Tenants {
    /// Number of tenant adapters held.
    pub fn len(&self) -> usize {
        self.state.lock().adapters.len()
    }

    /// The tenant's micro-LoRA now (`None` if it has none).
    pub fn micro(&self, tenant: &str) -> Option<Arc<LoraWeights>> {
        self.state
            .lock()
            .adapters
            .get(tenant)
            .map(|a| a.micro.clone())
    }

    /// The tenant owning open trajectory `id`, if a tenant decided it.
    fn owner(&self, id: u64) -> Option<Arc<str>> {
        if !self.active.load(Relaxed) {
            return None;
        }
        self.state.lock().owners.get(&id).cloned()
    }

    /// Writes every adapter (names sorted, so equal states give equal files) into `ck`.
    pub(crate) fn write_into(&self, ck: &mut Checkpoint, cfg: &EngineConfig) -> Result<()> {
        let st = self.state.lock();
        let mut names: Vec<&Arc<str>> = st.adapters.keys().collect();
        names.sort();
        let n = names.len();
        for (k, (key, w)) in fields(cfg).into_iter().enumerate() {
            let mut v = Vec::with_capacity(n * w);
            for name in &names {
                v.extend_from_slice(parts(&st.adapters[*name])[k]);
            }
            ck.put_f32(&format!("tenants.{key}"), &[n, w], &v);
        }
        let names: Vec<&str> = names.iter().map(|s| &***s).collect();
        ck.set_meta("tenants", &names)?;
        Ok(())
    }

    /// Reads what [`Tenants::write_into`] wrote; a checkpoint without tenants gives an empty map.
    pub(crate) fn read_from(ck: &Checkpoint, cfg: &EngineConfig) -> Result<Tenants> {
        let out = Tenants::default();
        // Missing (a checkpoint from before tenants): none. Present: must be a list of names.
        let Ok(raw) = ck.meta::<serde_json::Value>("tenants") else {
            return Ok(out);
        };
        let bad = |m: String| SonaError::checkpoint(format!("tenants: {m}"));
        let names: Vec<String> = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
        if names.len() > MAX_TENANTS {
            return Err(bad(format!(
                "{} adapters, at most {MAX_TENANTS}",
                names.len()
            )));
        }
        let mut cols = Vec::with_capacity(8);
        for (key, w) in fields(cfg) {
            let v = ck.get_f32_shaped(&format!("tenants.{key}"), &[names.len(), w])?;
            if !v.iter().all(|x| x.is_finite()) {
                return Err(bad(format!("{key}: non-finite values")));
            }
            cols.push((v, w));
        }
        let mut st = out.state.lock();
        for (i, name) in names.iter().enumerate() {
            check_tenant(name).map_err(|e| bad(e.to_string()))?;
            let row = |k: usize| -> &[f32] {
                let (v, w) = &cols[k];
                &v[i * w..(i + 1) * w]
            };
            let mut a = new_adapter(cfg, name, i as u64)?;
            let mut micro = (*a.micro).clone();
            (micro.a, micro.bt) = (row(0).to_vec(), row(1).to_vec());
            let mut head = (*a.head).clone();
            (head.a, head.bt) = (row(4).to_vec(), row(5).to_vec());
            a.opt
                .set_momentum(row(2), row(3))
                .map_err(|e| bad(e.to_string()))?;
            a.head_opt
                .set_momentum(row(6), row(7))
                .map_err(|e| bad(e.to_string()))?;
            (a.micro, a.head) = (Arc::new(micro), Arc::new(head));
            if st.adapters.insert(Arc::from(name.as_str()), a).is_some() {
                return Err(bad(format!("tenant {name:?} twice")));
            }
        }
        st.clock = names.len() as u64;
        drop(st);
        Ok(out)
    }
}

/// The saved tensors of an adapter: name and width of one tenant's row.
fn fields(cfg: &EngineConfig) -> [(&'static str, usize); 8] {
    let (e, hr) = (cfg.micro_rank * cfg.dim, cfg.head_rank());
    let (ha, hb) = (hr * cfg.hidden, hr * cfg.n_tiers);
    [
        ("a", e),
        ("bt", e),
        ("mom.a", e),
        ("mom.bt", e),
        ("head.a", ha),
        ("head.bt", hb),
        ("head_mom.a", ha),
        ("head_mom.bt", hb),
    ]
}

/// An adapter's values in the order of [`fields`].
fn parts(a: &Adapter) -> [&[f32]; 8] {
    let (ma, mb) = a.opt.momentum();
    let (ha, hb) = a.head_opt.momentum();
    [
        &a.micro.a,
        &a.micro.bt,
        ma,
        mb,
        &a.head.a,
        &a.head.bt,
        ha,
        hb,
    ]
}

impl Inner {
    /// `process` with `tenant`'s micro-LoRA in place of the shared one; the trajectory is the
    /// tenant's (its feedback steps that micro-LoRA only).
    pub(crate) fn process_tenant(&self, x: &[f32], tenant: &str) -> Result<Decision> {
        self.check_open()?;
        check_tenant(tenant)?;
        let view = {
            let mut st = self.tenants.state.lock();
            st.adapter(&self.cfg, tenant, &self.tenants.evicted)?
                .view(&self.model.load())
        };
        let d = self.process_with(x, Some(&view))?;
        let mut st = self.tenants.state.lock();
        let key = st
            .adapters
            .get_key_value(tenant)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(tenant));
        st.owners.insert(d.trajectory_id, key);
        if st.owners.len() > self.cfg.pending_capacity.max(64) {
            let now = now_ms();
            st.owners.retain(|id, _| self.pending.contains(*id, now));
        }
        self.tenants.active.store(true, Relaxed);
        Ok(d)
    }

    /// Loop A of a tenant's trajectory, if `id` is one: `None` when it is not (the caller then
    /// runs the shared loop A).
    pub(crate) fn tenant_feedback(
        &self,
        id: u64,
        reward: f32,
        _source: FeedbackSource,
    ) -> Option<Result<()>> {
        let tenant = self.tenants.owner(id)?;
        Some(self.step_tenant(id, reward, &tenant))
    }

    fn step_tenant(&self, id: u64, reward: f32, tenant: &str) -> Result<()> {
        let _gate = self.durable.gate.read();
        let entry = self
            .pending
            .take(id, now_ms())
            .map_err(|_| SonaError::UnknownId {
                kind: "trajectory (unknown, expired or already rewarded)",
                id: id.into(),
            })?;
        let d = self.cfg.dim;
        let cents: HashMap<u64, Arc<[f32]>> = self.centroids(&entry.ids).into_iter().collect();
        let item = ReplayItem {
            data: entry.data.clone(),
            ids: entry.ids.clone(),
            tier: entry.tier,
            reward,
            propensity: entry.propensity,
        };
        let shared = self.model.load_full();
        // Serialises this tenant map's steps (as the writer lock does loop A's).
        let mut st = self.tenants.state.lock();
        let adapter = st.adapter(&self.cfg, tenant, &self.tenants.evicted)?;
        let view = adapter.view(&shared);
        let stepped = with_scratch(|sc| {
            let norm =
                self.replay_forward(&shared.router, &shared.base, &view, &item, &cents, sc)?;
            let t = item.tier as usize;
            sc.dl.clear();
            sc.dl.resize(self.cfg.n_tiers, 0.0);
            sc.dl[t] = self.weight(item.propensity) * (sc.cache.out[t] - reward);
            self.replay_backward(&shared.router, &shared.base, &view, &item, norm, sc, None);
            // Loop A's two steps, on the tenant's pair.
            let mut micro = (*adapter.micro).clone();
            if adapter
                .opt
                .step(&adapter.micro, &mut micro, &item.data[..d], &sc.e)
                .is_ok()
            {
                adapter.micro = Arc::new(micro);
            }
            let hl = sc.cache.h_final(self.layout.hidden).to_vec();
            let mut head = (*adapter.head).clone();
            if adapter
                .head_opt
                .step(&adapter.head, &mut head, &hl, &sc.dl)
                .is_ok()
            {
                adapter.head = Arc::new(head);
            }
            Some(())
        });
        let _ = stepped;
        st.owners.remove(&id);
        self.tenants.feedbacks.fetch_add(1, Relaxed);
        Ok(())
    }
}
