//! The dry run behind `ire plan`: for each step, the resources its target's selector
//! matches now, those the blast-radius mode and the guard would pick, and why the others
//! are left out. Nothing is changed; the same seed gives the same choices.
//!
//! Each step is planned against the fleet as it is now: a plan does not simulate what
//! earlier steps would do (a killed resource is still shown healthy to the next step).

use std::sync::Arc;

use ire_core::Resource;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use super::guard::{HealthSource, MonitorHealth};
use super::model::Campaign;
use super::plan;
use super::report::Excluded;
use crate::wiring::Node;

/// What a campaign would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PlanReport {
    /// The campaign's name.
    pub campaign: String,
    /// The seed the choices were drawn with.
    pub seed: u64,
    /// Each step, in file order.
    pub steps: Vec<StepPlan>,
}

/// What one step would do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepPlan {
    /// The step.
    pub step: String,
    /// Its plugin.
    pub plugin: String,
    /// Its target.
    pub target: String,
    /// The target's mode.
    pub mode: String,
    /// The target's guard, if any.
    pub min_available: Option<String>,
    /// How long its fault would be held.
    pub duration: Option<String>,
    /// Resources matched, in adapter order.
    pub matched: Vec<String>,
    /// Resources chosen.
    pub chosen: Vec<String>,
    /// Resources left out, with why.
    pub excluded: Vec<Excluded>,
    /// Why the step could not be planned (its target matches nothing, ...).
    pub error: Option<String>,
}

impl PlanReport {
    /// The plan as text.
    pub fn table(&self) -> String {
        let mut out = format!("campaign {} (seed {})\n", self.campaign, self.seed);
        for s in &self.steps {
            out.push_str(&format!(
                "\nstep {}: {} on target {} (mode {}{}{})\n",
                s.step,
                s.plugin,
                s.target,
                s.mode,
                s.min_available
                    .as_ref()
                    .map(|m| format!(", min-available {m}"))
                    .unwrap_or_default(),
                s.duration
                    .as_ref()
                    .map(|d| format!(", held {d}"))
                    .unwrap_or_default()
            ));
            if let Some(e) = &s.error {
                out.push_str(&format!("  cannot be planned: {e}\n"));
                continue;
            }
            let mut rows = Vec::new();
            for c in &s.chosen {
                rows.push(vec![c.clone(), "chosen".into(), String::new()]);
            }
            for x in &s.excluded {
                rows.push(vec![
                    x.resource.clone(),
                    "left out".into(),
                    x.reason.clone(),
                ]);
            }
            out.push_str(&format!(
                "  {} matched, {} chosen\n",
                s.matched.len(),
                s.chosen.len()
            ));
            out.push_str(&crate::cli::output::table(
                &["resource", "decision", "why"],
                rows,
            ));
            out.push('\n');
        }
        out
    }
}

/// The resources a target matches on this node now (the error says why there are none).
pub async fn resolve_target(
    node: &Node,
    campaign: &Campaign,
    target: &str,
) -> Result<Vec<Arc<Resource>>, String> {
    let t = campaign
        .targets
        .get(target)
        .ok_or_else(|| format!("unknown target {target:?}"))?;
    if let (Some(want), Some(here)) = (&t.region, &node.config.node.region) {
        if want != here {
            return Err(format!(
                "target {target} is in region {want}; this node is in region {here}"
            ));
        }
    }
    let adapter = node
        .adapter(&t.adapter)
        .map_err(|e| format!("target {target}: {e}"))?;
    let resources: Vec<Arc<Resource>> = adapter
        .list_resources(&t.selector.to_filter())
        .await
        .map_err(|e| format!("listing target {target} on adapter {}: {e}", t.adapter))?
        .into_iter()
        .map(Arc::new)
        .collect();
    if resources.is_empty() {
        return Err(format!(
            "target {target}'s selector ({}) matches no resource of adapter {}",
            t.selector, t.adapter
        ));
    }
    Ok(resources)
}

/// Plans every step (see the module docs).
pub async fn dry_run(node: &Node, campaign: &Campaign, seed: Option<u64>) -> PlanReport {
    let seed = seed.unwrap_or_else(|| rand::rng().next_u64());
    let mut rng = StdRng::seed_from_u64(seed);
    let health: Arc<dyn HealthSource> = Arc::new(MonitorHealth(node.monitor.clone()));
    let mut steps = Vec::new();
    for step in &campaign.steps {
        let t = &campaign.targets[&step.target];
        let mut plan = StepPlan {
            step: step.name.clone(),
            plugin: step.plugin.clone(),
            target: step.target.clone(),
            mode: t.mode.to_string(),
            min_available: t.guard.min_available.map(|m| m.to_string()),
            duration: step.duration.map(|d| d.to_string()),
            matched: Vec::new(),
            chosen: Vec::new(),
            excluded: Vec::new(),
            error: None,
        };
        match resolve_target(node, campaign, &step.target).await {
            Err(e) => plan.error = Some(e),
            Ok(resources) => {
                let cands = super::run::candidates(&node.store, health.as_ref(), &resources).await;
                let sel = plan::select(t.mode, &t.guard, &cands, &mut rng);
                plan.matched = cands.iter().map(|c| c.key.clone()).collect();
                plan.chosen = sel.chosen.iter().map(|&i| cands[i].key.clone()).collect();
                plan.excluded = sel
                    .excluded
                    .iter()
                    .map(|(i, why)| Excluded {
                        resource: cands[*i].key.clone(),
                        reason: why.to_string(),
                    })
                    .collect();
            }
        }
        steps.push(plan);
    }
    PlanReport {
        campaign: campaign.name.clone(),
        seed,
        steps,
    }
}
